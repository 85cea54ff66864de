"""The libvirt shell: the only code that imports `libvirt`."""
