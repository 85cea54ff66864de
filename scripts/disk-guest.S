/* A boot disk in one sector, for tests of disks from host paths (scripts/disk-guest.sh).
 *
 * The BIOS loads it at 0x7c00 and jumps here. It prints "VPDISK BOOTED" on the first
 * serial port, then writes its own sector back with one byte changed (BIOS int 13h,
 * function 03h) and prints "VPDISK WRITE OK" or, when the disk is read-only,
 * "VPDISK WRITE REFUSED"; then it halts. A test reads the serial log and compares the
 * disk file before and after.
 */
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov %dl, drive              /* the BIOS passes the boot drive in %dl */
    mov $booted, %si
    call puts
    movb $'W', marker           /* so a write that went through changes the file */
    mov $0x0301, %ax            /* write 1 sector */
    mov $0x0001, %cx            /* cylinder 0, sector 1 */
    xor %dh, %dh                /* head 0 */
    mov drive, %dl
    mov $0x7c00, %bx            /* from this very sector in memory */
    int $0x13
    mov $written, %si
    jnc report
    mov $refused, %si
report:
    call puts
halt:
    hlt
    jmp halt

/* puts: the NUL-terminated string at %si to COM1 (0x3f8), waiting for an empty THR. */
puts:
    lodsb
    test %al, %al
    jz 2f
    mov %al, %ah
    mov $0x3fd, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    mov %ah, %al
    mov $0x3f8, %dx
    out %al, %dx
    jmp puts
2:  ret

drive:   .byte 0
marker:  .byte 'R'
booted:  .asciz "VPDISK BOOTED\r\n"
written: .asciz "VPDISK WRITE OK\r\n"
refused: .asciz "VPDISK WRITE REFUSED\r\n"
.org 510
.word 0xaa55
