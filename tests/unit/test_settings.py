from pathlib import Path
from typing import Any

import pytest
import yaml

from virtualpod.core.settings import (
    DEFAULTS_YAML,
    PressureSignal,
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    settings_from_mapping,
)
from virtualpod.core.spec import SuspendMode

Mi = 2**20


def test_documented_defaults_are_the_defaults() -> None:
    assert settings_from_mapping(yaml.safe_load(DEFAULTS_YAML)) == Settings()
    assert settings_from_mapping(None) == Settings()


def test_keys_are_camel_case_and_parsed() -> None:
    settings = settings_from_mapping(
        {
            "defaultContainerSize": {"cpu": "500m", "memory": "1Gi"},
            "vmmOverhead": {"memoryPerVCPU": "16Mi"},
            "libvirtURI": "qemu:///system",
            "eviction": {
                "signal": "pool",
                "hard": {"memoryAvailable": "200Mi"},
                "soft": {"memoryAvailable": "1Gi", "gracePeriod": "1m"},
                "samplingInterval": "250ms",
                "poolAllocatable": "4Gi",
                "suspendMode": "Pause",
            },
        }
    )
    assert settings.default_container_size.cpu_millis == 500
    assert settings.vmm_overhead.memory_per_vcpu_bytes == 16 * Mi
    assert settings.vmm_overhead.memory_bytes == Settings().vmm_overhead.memory_bytes
    assert settings.libvirt_uri == "qemu:///system"
    assert settings.eviction.signal is PressureSignal.POOL
    assert settings.eviction.hard_memory_available_bytes == 200 * Mi
    assert settings.eviction.soft_memory_available_bytes == 1024 * Mi
    assert settings.eviction.soft_grace_period_s == 60
    assert settings.eviction.sampling_interval_s == 0.25
    assert settings.eviction.suspend_mode is SuspendMode.PAUSE
    assert settings.eviction.pool_allocatable_bytes == 4096 * Mi
    backoff = settings_from_mapping({"restartBackoff": {"initial": "1s", "reset": "1m"}})
    assert (backoff.restart_backoff.initial_s, backoff.restart_backoff.max_s) == (1.0, 300.0)
    assert backoff.restart_backoff.reset_s == 60.0
    assert Settings().eviction.pool_allocatable_bytes is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"defaultContainerSise": {}}, "unknown key(s) defaultContainerSise"),
        ({"padding": {"gpu": 1}}, "padding: unknown key(s) gpu"),
        ({"padding": {"memory": "-1"}}, "padding.memory"),
        ({"eviction": {"hard": {"memoryAvailable": "x"}}}, "eviction.hard.memoryAvailable"),
        ({"eviction": {"samplingInterval": "soon"}}, "eviction.samplingInterval"),
        ({"eviction": {"samplingInterval": 0}}, "greater than zero"),
        ({"eviction": {"signal": "swap"}}, "eviction.signal"),
        ({"domainType": "xen"}, "domainType"),
        ({"consoleLogDir": "logs"}, "consoleLogDir"),
        ({"restartBackoff": {"initial": "1m", "max": "10s"}}, "restartBackoff.max"),
        ({"restartBackoff": {"jitter": 1}}, "restartBackoff: unknown key(s) jitter"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_settings_name_the_key(document: dict[str, Any] | list[int], message: str) -> None:
    with pytest.raises(SettingsError, match=None) as caught:
        settings_from_mapping(document)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h", 3600), (2, 2.0)]
)
def test_durations(text: int | str, seconds: float | int) -> None:
    assert parse_duration(text, "k") == seconds


def test_load_settings_from_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("hostName: node-1\n")
    assert load_settings(path).host_name == "node-1"
    path.write_text("hostName: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


@pytest.mark.parametrize("allowed", ["/var/lib/virtualpod", "/var/lib/virtualpod/volumes/x"])
def test_allowed_host_paths_never_overlap_the_storage_pools(allowed: str) -> None:
    with pytest.raises(SettingsError, match="overlaps the storage pool directory"):
        settings_from_mapping({"hostPaths": {"allowed": [allowed]}})
