"""The embedded model's native library is portable: built without CPU tuning, cached by flags.

A llama-cpp-python built with native tuning on a CPU with AMX died with SIGSEGV on a VM
that does not grant AMX. These tests hold the line: the installed library has no
native-only kernels, scripts/llama-wheel builds with an explicit baseline, its wheel
cache is keyed by version and flags (a native wheel is never taken for a portable one),
and every place that installs llama-cpp-python goes through it.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "llama-wheel"
# Kernels a build only gets from native tuning on a CPU that has them; they fault where
# the CPU (or the VM) lacks them.
NATIVE_ONLY = re.compile(r"^(AMX\w*|AVX512\w*|AVX_VNNI)$")
X86 = platform.machine().lower() in ("x86_64", "amd64")


def compiled_features(system_info: str) -> set[str]:
    """The 'NAME = 1' entries of llama.cpp's system info: what the library was built with."""
    return {name for name, value in re.findall(r"(\w+) = (\d+)", system_info) if value == "1"}


def run_script(*args: str, **env: str) -> str:
    result = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TRINITY_LLAMA_NATIVE": "0", **env},
    )
    return result.stdout.strip()


def test_the_installed_library_has_no_native_only_kernels() -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    features = compiled_features(info)
    assert features, f"no compiled features found in {info!r}"
    assert not {f for f in features if NATIVE_ONLY.match(f)}, info
    if X86:
        assert {"AVX2", "FMA", "F16C"} <= features, info


def test_the_feature_reader_sees_amx_in_a_native_build() -> None:
    native = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | AVX_VNNI = 0 | "
    features = compiled_features(native)
    assert {f for f in features if NATIVE_ONLY.match(f)} == {"AVX512", "AMX_INT8"}


def test_the_portable_flags_name_a_baseline_and_turn_native_tuning_off() -> None:
    flags = run_script("flags").split()
    assert "-DGGML_NATIVE=OFF" in flags
    if X86:
        for on in ("AVX", "AVX2", "FMA", "F16C"):
            assert f"-DGGML_{on}=ON" in flags
        for off in ("AVX512", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
            assert f"-DGGML_{off}=OFF" in flags


def test_the_wheel_cache_is_keyed_by_version_and_flags() -> None:
    portable = run_script("key")
    native = run_script("key", TRINITY_LLAMA_NATIVE="1")
    other_release = run_script("key", LLAMA_CPP_VERSION="0.3.9")
    assert len({portable, native, other_release}) == 3
    assert "0.3.9" in other_release
    assert platform.machine() in portable


def test_a_native_wheel_in_the_cache_is_never_taken_for_the_portable_one(tmp_path: Path) -> None:
    """Each key has its own folder: the portable build finds only its own wheel."""
    env = {"TRINITY_WHEELHOUSE": str(tmp_path)}
    wheel = "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    native_dir = tmp_path / run_script("key", TRINITY_LLAMA_NATIVE="1", **env)
    portable_dir = tmp_path / run_script("key", **env)
    for folder in (native_dir, portable_dir):
        folder.mkdir()
        (folder / wheel).write_bytes(folder.name.encode())
    assert run_script("build", **env) == str(portable_dir / wheel)
    assert run_script("build", TRINITY_LLAMA_NATIVE="1", **env) == str(native_dir / wheel)


def test_an_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run([str(SCRIPT), "bogus"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr


LOCAL_EXTRA = re.compile(r"pip (install|wheel)\b.*\[[^]]*\blocal\b")


def logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def make_recipes(text: str) -> dict[str, list[str]]:
    """Each Makefile target's recipe lines."""
    recipes: dict[str, list[str]] = {}
    current: list[str] = []
    for line in logical_lines(text):
        target = re.match(r"^([$()\w.-]+):", line)
        if target:
            current = recipes.setdefault(target.group(1), [])
        elif line.startswith("\t"):
            current.append(line)
    return recipes


def test_every_make_target_installs_the_portable_wheel_before_the_local_extra() -> None:
    """pip must never compile llama-cpp-python with its own (native) defaults."""
    recipes = make_recipes((REPO / "Makefile").read_text(encoding="utf-8"))
    checked = 0
    for target, lines in recipes.items():
        for number, line in enumerate(lines):
            if LOCAL_EXTRA.search(line) and "bench" not in line:
                earlier = " ".join(lines[:number])
                assert "scripts/llama-wheel build" in earlier, f"{target}: {line}"
                checked += 1
    assert checked >= 2  # setup and install


def test_the_image_takes_llama_cpp_python_only_as_the_portable_wheel() -> None:
    lines = logical_lines((REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert any("scripts/llama-wheel build" in line for line in lines)
    wheels = [line for line in lines if LOCAL_EXTRA.search(line)]
    assert wheels
    for line in wheels:
        # --no-index: only the wheels built before, the portable one among them.
        assert "--only-binary llama-cpp-python" in line or "--no-index" in line, line


def test_ci_sets_up_through_make() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make setup" in ci
