"""`trinity doctor` against real things: the loopback fake LLM server, a real redis-server,
a real worker process that crashes, and the real embedded model (when it is installed).

Only what a check asks over the network or of a child process is real here; the other
probes are the unit tests' fakes, so a verdict never depends on this machine's CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.fakellm import FakeLLMServer
from tests.redisserver import REDIS_REQUIRED, REDIS_SERVER, RedisServer, free_port
from tests.unit.conftest import MINIMAL_SETTINGS, ProjectFactory
from tests.unit.test_doctor import only, probes
from trinity import doctor
from trinity.config import Settings
from trinity.doctor import FAIL, OK, REBUILD_HINT, WARN, CheckResult, PackagedModel, Setup
from trinity.llm.providers import local
from trinity.llm.settings import LLMSettings

pytestmark = pytest.mark.usefixtures("_in_tmp_path")


@pytest.fixture
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def project_settings(
    tmp_path: Path, yaml_text: str, environ: dict[str, str] | None = None
) -> Settings:
    factory = ProjectFactory(tmp_path)
    factory.settings_file(MINIMAL_SETTINGS + yaml_text)
    return factory.load(environ)


def server_row(settings: Settings) -> CheckResult:
    """The real HTTP path: no transport is injected, so httpx opens a real connection."""
    return only(doctor.check_servers(Setup(settings, probes=probes(http_transport=None))))


def llm_yaml(provider: str, url: str, model: str) -> str:
    return f"llm:\n  provider: {provider}\n  api_url: {url}\n  model: {model}\n"


# --------------------------------------------------------------------------- model servers


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_a_server_that_lists_the_model_is_ok(
    tmp_path: Path, fake_llm: FakeLLMServer, provider: str
) -> None:
    fake_llm.models = ["llama3.2", "qwen3:8b"]
    row = server_row(project_settings(tmp_path, llm_yaml(provider, fake_llm.url, "llama3.2")))
    assert (row.name, row.status) == (f"server: {provider}", OK)
    assert fake_llm.chat_count == 0  # listing models costs nothing


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_a_server_without_the_model_fails(
    tmp_path: Path, fake_llm: FakeLLMServer, provider: str
) -> None:
    fake_llm.models = ["qwen3:8b"]
    row = server_row(project_settings(tmp_path, llm_yaml(provider, fake_llm.url, "llama3.2")))
    assert row.status == FAIL
    assert "does not list llama3.2" in row.detail
    assert "qwen3:8b" in row.detail


def test_anthropic_is_asked_with_its_headers_and_the_key_is_never_shown(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    secret = "sk-ant-integration-secret"
    fake_llm.models = ["claude-3-5-haiku-20241022"]
    yaml_text = llm_yaml("anthropic", fake_llm.url, "claude-3-5-haiku-latest")
    settings = project_settings(tmp_path, yaml_text, {"ANTHROPIC_API_KEY": secret})
    results = doctor.run_checks(
        Setup(settings, probes=probes(http_transport=None)), [doctor.check_servers]
    )
    assert only(results).status == OK
    request = fake_llm.last_request
    assert request is not None
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["x-api-key"] == secret
    assert request.headers["anthropic-version"]
    assert secret not in repr(results)


def test_anthropic_without_a_key_fails_and_names_the_variable(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    settings = project_settings(tmp_path, llm_yaml("anthropic", fake_llm.url, "claude-x"))
    row = server_row(settings)
    assert row.status == FAIL
    assert "refused no API key (HTTP 401)" in row.detail
    assert "ANTHROPIC_API_KEY" in row.hint


def test_a_server_that_answers_but_has_no_models_list_is_a_warning(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    # The fake answers 404 on any path it does not know: a server, but no list there.
    url = f"{fake_llm.url}/somewhere-else"
    row = server_row(project_settings(tmp_path, llm_yaml("ollama", url, "llama3.2")))
    assert row.status == WARN
    assert "HTTP 404" in row.detail


def test_a_server_that_is_down_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    row = server_row(project_settings(tmp_path, llm_yaml("ollama", url, "llama3.2")))
    assert row.status == FAIL
    assert f"cannot reach {url}/api/tags" in row.detail
    assert "ollama serve" in row.hint


# --------------------------------------------------------------------------- Redis


def redis_yaml(port: int, host: str = "127.0.0.1") -> str:
    return f"cache:\n  tiers: [memory, redis, disk]\n  redis: {{host: {host}, port: {port}}}\n"


def redis_row(settings: Settings) -> CheckResult:
    return only(doctor.check_redis(Setup(settings, probes=probes())))


def test_redis_down_fails(tmp_path: Path) -> None:
    port = free_port()
    row = redis_row(project_settings(tmp_path, redis_yaml(port)))
    assert row.status == FAIL
    assert f"cannot reach redis://127.0.0.1:{port}/0" in row.detail
    assert "CACHE_REDIS_HOST" in row.hint


def test_redis_up_answers_ping(tmp_path: Path, redis_server: RedisServer) -> None:
    row = redis_row(project_settings(tmp_path, redis_yaml(redis_server.port)))
    assert row.status == OK
    assert f"redis://127.0.0.1:{redis_server.port}/0 answered PING" == row.detail


def test_redis_switched_on_by_the_environment_is_checked(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    row = redis_row(project_settings(tmp_path, "", redis_server.environ))
    assert row.status == OK


def test_redis_with_the_wrong_password_fails_without_showing_it(tmp_path: Path) -> None:
    if REDIS_SERVER is None:
        if REDIS_REQUIRED:
            pytest.fail("redis-server is not installed, and REQUIRE_REDIS_SERVER=1")
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path / "redis", password="the-right-one")
    try:
        environ = {**server.environ, "CACHE_REDIS_PASSWORD": "a-wrong-password"}
        settings = project_settings(tmp_path, "", environ)
        results = doctor.run_checks(Setup(settings, probes=probes()), [doctor.check_redis])
    finally:
        server.stop()
    row = only(results)
    assert row.status == FAIL
    assert row.hint == "set CACHE_REDIS_PASSWORD"
    assert "a-wrong-password" not in repr(results)


# --------------------------------------------------------------------------- the model


def generation_row(tmp_path: Path, generate: Any) -> CheckResult:
    settings = project_settings(tmp_path, "")
    return only(doctor.check_generation(Setup(settings, probes=probes(generate_once=generate))))


def test_a_worker_that_dies_of_sigsegv_fails_with_the_rebuild_hint(tmp_path: Path) -> None:
    """A real child process, killed by the kernel as a build for another CPU is."""

    def generate(settings: LLMSettings) -> str:
        return local.generate_once(settings, "tests.modelfactories:segfaults_when_generating")

    row = generation_row(tmp_path, generate)
    assert row.status == FAIL
    assert "SIGSEGV" in row.detail
    assert row.hint == REBUILD_HINT


def test_a_worker_that_answers_is_ok(tmp_path: Path) -> None:
    def generate(settings: LLMSettings) -> str:
        return local.generate_once(settings, "tests.modelfactories:echo")

    row = generation_row(tmp_path, generate)
    assert row.status == OK
    assert "written by a model" in row.detail


needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama_cpp is not installed"
)
needs_model_package = pytest.mark.skipif(
    importlib.util.find_spec(doctor.MODEL_PACKAGE) is None,
    reason=f"{doctor.MODEL_PACKAGE} is not installed",
)


@needs_llama
@needs_model_package
@pytest.mark.slow
def test_the_real_model_generates_one_token(tmp_path: Path) -> None:
    row = generation_row(tmp_path, doctor.Probes().generate_once)
    assert row.status == OK, row
    assert row.detail.startswith("the model answered")


@needs_model_package
@pytest.mark.slow
def test_a_corrupted_copy_of_the_real_model_fails_as_assemble_would(tmp_path: Path) -> None:
    package = importlib.import_module(doctor.MODEL_PACKAGE)
    copy = tmp_path / "gemma.gguf"
    package.assemble(copy)
    intact = PackagedModel(copy, package.EXPECTED_SHA256)
    assert doctor.packaged_model_result(intact).status == OK
    with copy.open("r+b") as file:
        file.seek(copy.stat().st_size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0xFF]))
    row = doctor.packaged_model_result(intact)
    assert row.status == FAIL
    assert "corrupt" in row.detail
    # The package itself refuses such a file (a build then assembles it again: see
    # test_local_provider.py).
    with pytest.raises(FileExistsError, match="unexpected sha256"):
        package.assemble(copy)


@needs_model_package
def test_the_real_package_probe_points_at_its_assembled_file() -> None:
    model = doctor.packaged_model()
    package = importlib.import_module(doctor.MODEL_PACKAGE)
    assert model.sha256 == package.EXPECTED_SHA256
    assert model.path.name == package.MODEL_NAME


@needs_llama
def test_the_installed_llama_cpp_describes_its_build() -> None:
    """Read in a child process; the version is the installed distribution's."""
    build = doctor.read_llama_build()
    assert build.version == doctor.package_version("llama_cpp")
    assert doctor.built_features(build.system_info), build.system_info


def test_the_cpu_flags_of_this_machine_are_read_on_linux() -> None:
    flags = doctor.read_cpu_flags()
    if Path("/proc/cpuinfo").is_file():
        assert flags, "a Linux CPU with no flags"
    else:
        assert flags is None


@pytest.mark.parametrize(
    ("module_text", "expected"),
    [
        ("raise ImportError('libllama.so: cannot open shared object file')\n", "libllama.so"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n", r"killed .*\(SIGILL\)"),
    ],
    ids=["cannot-import", "killed-by-sigill"],
)
def test_a_llama_cpp_that_cannot_load_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module_text: str, expected: str
) -> None:
    """A real child process, given a llama_cpp that fails as a broken build does."""
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "llama_cpp.py").write_text(module_text, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "shadow"))
    with pytest.raises(doctor.LlamaLoadError, match=expected):
        doctor.read_llama_build()
