"""Config loading: one-line errors that name file and field; secrets rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import EXIT_USAGE, ConfigError
from pipeline.hygiene import lifecycle

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
    assert "staging.registry: 'b' is not the name" in msg


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


# --------------------------------------------------------------------------- [sign] (issue 5)


@pytest.mark.parametrize("key", [".pipeline/cosign.key", "env://COSIGN_PRIVATE_KEY", "awskms:///alias/release",
                                 "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
                                 "azurekms://v.vault.azure.net/k", "hashivault://release"])
def test_sign_key_references_accepted(tmp_path, key):
    assert load_text(tmp_path, MINIMAL + f'[sign]\nkey = "{key}"\n').sign.key == key


@pytest.mark.parametrize("text,field,message", [
    ('key = "k8s://ns/name"', "sign.key", "unsupported key reference"),
    ('key = "env://bad-name"', "sign.key", "environment variable name"),
    ('public_key = "gitlab://acme/app"', "sign.public_key", "unsupported key reference"),
    ('key = "a.key"\nkeyless = true\nidentity = "i"\nissuer = "x"', "sign", "not both"),
    ('keyless = true', "sign", "set identity (or identity_regexp) and issuer"),
    ('keyless = true\nidentity = "i"\nissuer = "x"\ntlog_upload = false', "sign", "need the transparency log"),
    ('identity = "a"\nidentity_regexp = "b"', "sign", "not both"),
    ('password_env = "not a name"', "sign.password_env", "not an environment variable name"),
])
def test_sign_config_errors_name_the_field(tmp_path, text, field, message):
    msg = error_of(tmp_path, MINIMAL + "[sign]\n" + text + "\n")
    assert f": {field}: " in msg and message in msg


def test_sign_keyless_with_identity_regexp(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[sign]\nkeyless = true\nissuer = "https://token.actions.githubusercontent.com"\n'
                              'identity_regexp = "^https://github.com/acme/app/"\n')
    assert cfg.sign.keyless and cfg.sign.identity_regexp and cfg.sign.tlog_upload is None


def test_sign_public_key_may_be_a_url(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[sign]\nkey = "awskms:///alias/k"\npublic_key = "https://acme.dev/cosign.pub"\n')
    assert cfg.sign.public_key == "https://acme.dev/cosign.pub"


def test_project_default_config_signs_with_the_development_key():
    cfg = config.load(Path(__file__).parents[2] / "config" / "pipeline.toml", {})
    assert cfg.sign.enabled and cfg.sign.key == ".pipeline/cosign.key" and cfg.sign.tlog_upload is False
    assert ".pipeline/" in (Path(__file__).parents[2] / ".gitignore").read_text().splitlines()


# --------------------------------------------------------------------------- [scan] (issue 4)


def test_scan_statuses_are_trivys(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "[scan]\nignore_statuses = ['wont_fix']\n")
    assert "scan.ignore_statuses: 'wont_fix' is not a Trivy status" in msg and "will_not_fix" in msg


def test_scan_ignore_unfixed_and_ignore_statuses_exclude_each_other(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "[scan]\nignore_unfixed = true\nignore_statuses = ['affected']\n")
    assert "scan: set either ignore_unfixed or ignore_statuses" in msg


def test_scan_max_allowed_names_severities_and_counts(tmp_path):
    assert "scan.max_allowed" in error_of(tmp_path, MINIMAL + "[scan]\nmax_allowed = { SEVERE = 1 }\n")
    assert "cannot be negative" in error_of(tmp_path, MINIMAL + "[scan]\nmax_allowed = { HIGH = -1 }\n")
    assert load_text(tmp_path, MINIMAL + "[scan]\nmax_allowed = { HIGH = 3 }\n").scan.max_allowed == {"HIGH": 3}


def test_scan_fail_on_is_a_severity(tmp_path):
    assert "scan.fail_on" in error_of(tmp_path, MINIMAL + "[scan]\nfail_on = 'SEVERE'\n")


def test_scan_db_repositories_are_references(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "[scan]\ndb_repository = ['https://ghcr.io/aquasecurity/trivy-db:2']\n")
    assert "scan.db_repository" in msg and "scheme" in msg
    assert "scan.java_db_repository" in error_of(tmp_path, MINIMAL + "[scan]\njava_db_repository = ['A B']\n")
    cfg = load_text(tmp_path, MINIMAL + "[scan]\ndb_repository = ['127.0.0.1:5000/aquasec/trivy-db:2',"
                    " 'mirror.gcr.io/aquasec/trivy-db']\n")
    assert cfg.scan.db_repository[1] == "mirror.gcr.io/aquasec/trivy-db"


def test_project_default_config_scans_with_a_local_mirror_first():
    cfg = config.load(Path(__file__).parents[2] / "config" / "pipeline.toml", {})
    assert cfg.scan.enabled and cfg.scan.fail_on == "HIGH"
    assert cfg.scan.db_repository[0] == "localhost:5000/aquasec/trivy-db:2"
    assert cfg.scan.db_repository[1:] == ["mirror.gcr.io/aquasec/trivy-db:2", "ghcr.io/aquasecurity/trivy-db:2"]


def test_project_exceptions_file_parses():
    from pipeline.scan.policy import parse_exceptions

    path = Path(__file__).parents[2] / "config" / "scan-exceptions.toml"
    assert parse_exceptions(path.read_text(), str(path)) == ()


# --------------------------------------------------------------------------- [lifecycle] (ECR rules)

LIFECYCLE_OK = """
[lifecycle]
enabled = true
[[lifecycle.rules]]
rulePriority = 1
description = "keep the 10 newest releases"
selection = { tagStatus = "tagged", tagPatternList = ["v*"], countType = "imageCountMoreThan", countNumber = 10 }
action = { type = "expire" }
[[lifecycle.rules]]
rulePriority = 2
selection = { tagStatus = "any", countType = "sinceImagePushed", countUnit = "days", countNumber = 90 }
action = { type = "expire" }
"""


def test_lifecycle_rules_in_toml_use_the_ecr_schema(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + LIFECYCLE_OK)
    policy = lifecycle.policy(cfg.lifecycle)
    assert [r.priority for r in policy.rules] == [1, 2]
    assert policy.to_ecr()["rules"][0]["selection"]["tagPatternList"] == ["v*"]
    assert cfg.lifecycle.keep_candidates == 10 and cfg.lifecycle.age_sources[0] == "release"


def test_lifecycle_invalid_rule_names_file_and_ecr_field(tmp_path):
    bad = LIFECYCLE_OK.replace("countNumber = 10", "countNumber = 0")
    msg = error_of(tmp_path, MINIMAL + bad)
    assert msg.startswith(f"{tmp_path / 'pipeline.toml'}: lifecycle.rules[0].selection.countNumber: ")
    assert "0 is not accepted" in msg


def test_lifecycle_any_rule_must_come_last(tmp_path):
    bad = LIFECYCLE_OK.replace("rulePriority = 1", "rulePriority = 4").replace("rulePriority = 2", "rulePriority = 3")
    msg = error_of(tmp_path, MINIMAL + bad)
    assert "lifecycle.rules[1].rulePriority: 3: a rule with tagStatus any must have the highest rulePriority" in msg


def test_lifecycle_policy_file_errors_name_the_json_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ecr.json").write_text('{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",'
                                       ' "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1},'
                                       ' "action": {"type": "expire"}}]}')
    cfg = load_text(tmp_path, MINIMAL + '[lifecycle]\npolicy_file = "ecr.json"\n')  # read when used
    with pytest.raises(ConfigError) as exc:
        lifecycle.policy(cfg.lifecycle, str(tmp_path / "pipeline.toml"))
    assert str(exc.value).startswith("ecr.json: rules[0].selection.countUnit: not allowed with countType")
    assert exc.value.exit_code == EXIT_USAGE
    (tmp_path / "ecr.json").unlink()
    with pytest.raises(ConfigError, match="lifecycle.policy_file: cannot read ecr.json"):
        lifecycle.policy(cfg.lifecycle, str(tmp_path / "pipeline.toml"))


def test_lifecycle_rules_and_policy_file_are_exclusive(tmp_path):
    msg = error_of(tmp_path, MINIMAL + LIFECYCLE_OK.replace("enabled = true", 'policy_file = "x.json"'))
    assert "lifecycle: set either rules or policy_file" in msg


def test_lifecycle_registry_names_are_checked(tmp_path):
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "ghcr.io/acme"\n'
                   '[lifecycle]\nregistries = ["a", "b"]\n')
    assert "lifecycle.registries[1]: 'b' is not the name of a [[registries]] entry (a)" in msg
    msg = error_of(tmp_path, MINIMAL + '[[registries]]\nname = "a"\nurl = "ghcr.io/acme"\n'
                   '[lifecycle.registry_api]\na = "gitlab"\n')
    assert "lifecycle.registry_api.a:" in msg
    msg = error_of(tmp_path, MINIMAL + '[lifecycle]\nage_sources = ["created", "created"]\n')
    assert "age_sources lists a source twice" in msg


# --------------------------------------------------------------------------- access and distribution (issue 7)


def test_ghcr_and_dockerhub_auth_default_variable_names(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[[registries]]\nname = "g"\nurl = "ghcr.io/acme"\nauth = "ghcr"\n'
                    '[[registries]]\nname = "h"\nurl = "docker.io/acme"\nauth = "dockerhub"\npassword_env = "HUB_PAT"\n')
    assert cfg.registries[0].credential_env == ("GITHUB_ACTOR", "GITHUB_TOKEN")
    assert cfg.registries[1].credential_env == ("DOCKERHUB_USERNAME", "HUB_PAT")


def test_ghcr_and_dockerhub_auth_only_for_their_hosts(tmp_path):
    assert "is for ghcr.io" in error_of(tmp_path, MINIMAL + '[[registries]]\nname = "g"\nurl = "quay.io/a"\n'
                                        'auth = "ghcr"\n')
    assert "is for docker.io" in error_of(tmp_path, MINIMAL + '[[registries]]\nname = "h"\nurl = "ghcr.io/a"\n'
                                          'auth = "dockerhub"\n')


def test_ecr_host_gives_account_and_region(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[[registries]]\nname = "e"\nurl = "123456789012.dkr.ecr.eu-west-1'
                    '.amazonaws.com/team"\nauth = "ecr"\n')
    reg = cfg.registries[0]
    assert (reg.is_ecr, reg.ecr_account, reg.ecr_region) == (True, "123456789012", "eu-west-1")
    assert "needs aws_region" in error_of(tmp_path, MINIMAL + '[[registries]]\nname = "e"\nurl = "ecr.corp"\n'
                                          'auth = "ecr"\n')


def test_ecr_section(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[ecr]\ntag_immutability = true\nmutable_tags = ["latest", "v*-rc"]\n'
                    'encryption = "KMS"\nkms_key = "arn:aws:kms:eu-west-1:123456789012:key/abc"\n'
                    'pull_principals = ["111122223333", "arn:aws:iam::444455556666:role/ci"]\n')
    assert cfg.ecr.mutable_tags == ["latest", "v*-rc"] and cfg.ecr.scan_on_push
    assert "ecr.pull_principals" in error_of(tmp_path, MINIMAL + '[ecr]\npull_principals = ["bob"]\n')
    assert "kms_key goes with" in error_of(tmp_path, MINIMAL + '[ecr]\nkms_key = "alias/x"\n')
    assert "mutable_tags only matter" in error_of(tmp_path, MINIMAL + '[ecr]\nmutable_tags = ["latest"]\n')
    assert "ecr.mutable_tags" in error_of(tmp_path, MINIMAL + '[ecr]\ntag_immutability = true\n'
                                          'mutable_tags = ["a b"]\n')
    assert "ecr.pull_organizations" in error_of(tmp_path, MINIMAL + '[ecr]\npull_organizations = ["org1"]\n')


def test_ci_section(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[ci]\npython = "3.13"\nrunners = {"linux/arm64" = "arm"}\n')
    assert cfg.ci.python == "3.13" and cfg.ci.release_tags == ["v*"] and cfg.ci.runners == {"linux/arm64": "arm"}
    assert "ci.python" in error_of(tmp_path, MINIMAL + '[ci]\npython = "latest"\n')
    assert "ci.runners" in error_of(tmp_path, MINIMAL + '[ci]\nrunners = {"arm64" = "x"}\n')
    assert "ci.release_tags" in error_of(tmp_path, MINIMAL + '[ci]\nrelease_tags = ["${{ x }}"]\n')


def test_build_secrets_name_where_the_secret_is_and_a_secret_looking_build_arg_names_them(tmp_path):
    from pipeline import config as cfg_mod

    ok = cfg_mod.parse({"image": {"name": "app", "secrets": {"token": {"env": "NPM_TOKEN"},
                                                             "netrc": {"file": "~/.netrc"}}}}, "p.toml")
    assert ok.image.secrets["token"].env == "NPM_TOKEN"          # an id called "token" is no inline secret
    msg = error_of(tmp_path, MINIMAL + '[image.build_args]\nNPM_TOKEN = "x"\n')
    assert "image.build_args.NPM_TOKEN" in msg and "[image.secrets] NPM_TOKEN = { env = \"NPM_TOKEN\" }" in msg
    msg = error_of(tmp_path, MINIMAL + '[image.secrets.npm]\nenv = "A"\nfile = "b"\n')
    assert "image.secrets.npm" in msg and "exactly one of" in msg
    msg = error_of(tmp_path, MINIMAL + '[image.build_args]\nVERSION = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"\n')
    assert "image.build_args.VERSION" in msg and "[image.secrets]" in msg and "ghp_" not in msg
