"""Config loading: one-line errors that name file and field; secrets rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import EXIT_USAGE, ConfigError

MINIMAL = '[image]\nname = "app"\n'


def load_text(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return config.load(p, {})


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, text)
    msg = str(exc.value)
    assert "\n" not in msg
    assert exc.value.exit_code == EXIT_USAGE
    return msg


def test_minimal_config_has_defaults(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.image.platforms == ["linux/amd64"]
    assert cfg.scan.enabled and cfg.sign.enabled and cfg.copy_.failure_policy == "all-or-nothing"
    assert cfg.registries == [] and cfg.staging_registry is None


def test_project_default_config_is_valid():
    cfg = config.load(Path(__file__).parents[2] / "config" / "pipeline.toml", {})
    assert cfg.image.platforms == ["linux/amd64", "linux/arm64"]
    assert cfg.staging_registry.url == "localhost:5000"


def test_error_names_file_and_indexed_field(tmp_path):
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "ghcr.io"\n'
                   '[[registries]]\nname = "b"\nurl = "https://ghcr.io"\n')
    assert msg.startswith(f"{tmp_path / 'pipeline.toml'}: registries[1].url: ")
    assert "scheme" in msg


def test_unknown_key_rejected(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "[scan]\nfail_onn = 'HIGH'\n")
    assert "scan.fail_onn: unknown key" in msg


def test_unknown_section_rejected(tmp_path):
    assert "registry: unknown key" in error_of(tmp_path, MINIMAL + "[registry]\nurl = 'x'\n")


def test_missing_image_name(tmp_path):
    assert "image.name: required" in error_of(tmp_path, "[image]\nplatforms = ['linux/amd64']\n")


@pytest.mark.parametrize("snippet, field", [
    ('[[registries]]\nname = "r"\nurl = "ghcr.io"\npassword = "hunter2"\n', "registries[0].password"),
    ('[[registries]]\nname = "r"\nurl = "ghcr.io"\ntoken = "abc"\n', "registries[0].token"),
    ('[sign]\nkey = "-----BEGIN ENCRYPTED PRIVATE KEY-----abc"\n', "sign.key"),
    ('[image.build_args]\nNPM_TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"\n', "image.build_args.NPM_TOKEN"),
])
def test_secrets_rejected_with_env_alternative(tmp_path, snippet, field):
    msg = error_of(tmp_path, MINIMAL + snippet)
    assert f": {field}: " in msg
    assert "hunter2" not in msg and "ghp_" not in msg and "BEGIN" not in msg


def test_password_key_points_to_env_alternative(tmp_path):
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "r"\nurl = "ghcr.io"\npassword = "x1y2z3"\n')
    assert "password_env" in msg


def test_tag_rule_error_names_index_and_text(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "[tags]\nrules = ['type=sha', 'type=semver']\n")
    assert "tags.rules[1]" in msg and "type=semver" in msg and "pattern" in msg


def test_flavor_error(tmp_path):
    assert "tags.flavor[0]" in error_of(tmp_path, MINIMAL + "[tags]\nflavor = ['latest=sometimes']\n")


def test_staging_must_name_a_registry(tmp_path):
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "ghcr.io/acme"\n[staging]\nregistry = "b"\n')
    assert "staging.registry 'b'" in msg


def test_insecure_default_only_for_loopback(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "localhost:5000"\n'
                    '[[registries]]\nname = "b"\nurl = "127.0.0.1:5001/team"\n'
                    '[[registries]]\nname = "c"\nurl = "ghcr.io/acme"\n'
                    '[[registries]]\nname = "d"\nurl = "registry.internal:5000"\ninsecure = true\n')
    assert [r.allow_http for r in cfg.registries] == [True, True, False, True]
    assert cfg.registries[1].repository("app") == "team/app"
    assert cfg.images() == ["localhost:5000/app", "127.0.0.1:5001/team/app", "ghcr.io/acme/app", "registry.internal:5000/app"]


def test_env_names_validated(tmp_path):
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "ghcr.io"\nusername_env = "U"\npassword_env = "bad-name"\n')
    assert "registries[0].password_env" in msg


def test_bad_platform(tmp_path):
    assert "image.platforms" in error_of(tmp_path, "[image]\nname = 'a'\nplatforms = ['arm64']\n")


def test_not_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in error_of(tmp_path, "[image\n")
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path / "nope.toml", {})
    assert "nope.toml: not found" in str(exc.value)


def test_every_optional_stage_can_be_disabled(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "".join(f"[{s}]\nenabled = false\n"
                                                  for s in ("build", "scan", "copy", "sign", "tag", "verify")))
    assert not any([cfg.build.enabled, cfg.scan.enabled, cfg.copy_.enabled, cfg.sign.enabled,
                    cfg.tag.enabled, cfg.verify.enabled])
