"""Building the Ray application from settings: `serve run`'s builder arguments, and the
checks that refuse a setup several machines cannot share. No cluster is started."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.scaleout

PG = "postgresql+psycopg://sdserve@db.invalid:5432/sdserve"


def test_serve_run_builder_takes_config_file_and_settings(tmp_path):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # what `serve run` calls

    from sdserve.deploy.ray import app

    cfg = tmp_path / "sdserve.toml"
    cfg.write_text(f'database_url = "{PG}"\noutputs_backend = "s3"\ns3_bucket = "outs"\n')
    built = call_user_app_builder_with_args_if_necessary(
        app, {"config_file": str(cfg), "ray_model_min_replicas": "1", "ray_model_max_replicas": "4"})
    assert isinstance(built, Application)
    with pytest.raises(ValueError, match="ray_model_min_replicas"):
        app({"config_file": str(cfg), "ray_model_min_replicas": "5", "ray_model_max_replicas": "4"})


def test_ray_mode_refuses_a_database_replicas_cannot_share(tmp_path):
    from sdserve.config import Settings
    from sdserve.deploy.ray import build_ray_app

    for url in (None, f"sqlite:///{tmp_path}/jobs.db"):
        with pytest.raises(ValueError, match="database_url"):
            build_ray_app(Settings(data_dir=tmp_path, database_url=url))


def test_cli_checks_settings_before_connecting_to_ray(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sdserve.cli.main", "serve", "--ray", "local", "--data-dir",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "database_url" in r.stderr and "PostgreSQL" in r.stderr
