"""Time define+start, intent write, pause, resume, save, restore on real QEMU; print JSON.

    eval "$(scripts/libvirtd.sh start)"
    .venv/bin/python bench/hypervisor_bench.py [--sizes 128,512,1024] [--repeats 3]

Each size boots the TCG test guest (scripts/guest.sh) with that much RAM and has it
fill 3/4 of it with random data (so save/restore move real, incompressible memory),
then repeats pause/resume and save/restore on it. define+start is timed on a fresh
domain each repeat (libvirt calls only; guest boot time is reported separately).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from virtualpod.libvirt.hypervisor import Hypervisor, SuspendMode

REPO = Path(__file__).resolve().parents[1]


def guest_xml(
    name: str, uuid: str, kernel: str, initrd: str, mib: int, touch: int, log: str
) -> str:
    return f"""<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd><cmdline>console=ttyS0 quiet vp.touch={touch}</cmdline></os>
  <devices><serial type='file'><source path='{log}'/><target port='0'/></serial>
    <memballoon model='virtio'/></devices></domain>"""


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(samples), 4),
        "max_s": round(max(samples), 4),
        "n": len(samples),
    }


async def wait_log(path: Path, text: str, timeout: float) -> float:
    """Seconds until `text` appears in the guest's serial log."""
    t0 = time.monotonic()
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{text!r} not in {path} after {timeout}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def bench_size(
    hv: Hypervisor, kernel: str, initrd: str, mib: int, repeats: int
) -> dict[str, Any]:
    touch = mib * 3 // 4
    timings: dict[str, list[float]] = {
        k: [] for k in ("define_start", "intent_write", "pause", "resume", "save", "restore")
    }
    boot: list[float] = []
    released: list[int] = []
    for _ in range(repeats):
        uuid = str(uuidlib.uuid4())
        name = f"vpbench-{mib}-{uuid[:6]}"
        log = Path(f"/var/log/libvirt/qemu/{name}.serial.log")
        xml = guest_xml(name, uuid, kernel, initrd, mib, touch, str(log))
        try:
            t0 = time.monotonic()
            await hv.ensure_defined(xml)
            await hv.start(uuid)
            timings["define_start"].append(time.monotonic() - t0)
            boot.append(await wait_log(log, f"VPGUEST TOUCHED {touch}", 300))
            t0 = time.monotonic()  # what the pressure loop writes before each suspend
            await hv.set_metadata(uuid, "pressure", '<intent action="suspend" done="false"/>')
            timings["intent_write"].append(time.monotonic() - t0)
            timings["pause"].append((await hv.suspend(uuid, SuspendMode.PAUSE)).seconds)
            timings["resume"].append((await hv.resume(uuid, SuspendMode.PAUSE)).seconds)
            saved = await hv.suspend(uuid, SuspendMode.SAVE)
            timings["save"].append(saved.seconds)
            released.append(saved.released_bytes or 0)
            timings["restore"].append((await hv.resume(uuid, SuspendMode.SAVE)).seconds)
        finally:
            await hv.undefine(uuid)
            log.unlink(missing_ok=True)
    return {
        "memory_mib": mib,
        "touched_mib": touch,
        **{k: summary(v) for k, v in timings.items()},
        "boot_and_touch": summary(boot),
        "save_released_mib_p50": round(statistics.median(released) / 2**20, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri", default=os.environ.get("VIRTUALPOD_QEMU_URI", "qemu:///system"))
    parser.add_argument("--sizes", default="128,512,1024")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = subprocess.run(
        [str(REPO / "scripts" / "guest.sh")], check=True, capture_output=True, text=True
    ).stdout
    paths = dict(line.split("=", 1) for line in out.split())
    results = []
    async with Hypervisor(args.uri) as hv:
        for mib in (int(s) for s in args.sizes.split(",")):
            results.append(
                await bench_size(
                    hv, paths["GUEST_KERNEL"], paths["GUEST_INITRD"], mib, args.repeats
                )
            )
    print(
        json.dumps(
            {
                "uri": args.uri,
                "guest": "tcg busybox, 3/4 of RAM touched (random)",
                "cpus": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
