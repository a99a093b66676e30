"""The lab package check: a role asking for a package the image lacks must fail the check."""

import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).resolve().parent / "check_packages.py"


def make_repo(tmp_path: Path, defaults: str | None) -> Path:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "packages.txt").write_text("# base\nredis-server\ncurl  # tools\n")
    if defaults is not None:
        (tmp_path / "roles" / "r" / "defaults").mkdir(parents=True)
        (tmp_path / "roles" / "r" / "defaults" / "main.yml").write_text(defaults)
    return tmp_path


def run(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(repo)], capture_output=True, text=True)


def test_a_package_missing_from_the_image_fails_the_check(tmp_path):
    result = run(make_repo(tmp_path, "r_packages:\n  - redis-server\n  - grafana\n"))
    assert result.returncode == 1
    assert "role r: r_packages: grafana" in result.stdout


def test_packages_present_jinja_and_other_variables_pass(tmp_path):
    defaults = (
        'r_packages: [curl, "redis-server=5:7*", "{{ x }}"]\nr_more_packages: "{{ y }}"\nr_n: 1\n'
    )
    assert run(make_repo(tmp_path, defaults)).returncode == 0


def test_no_roles_passes(tmp_path):
    assert run(make_repo(tmp_path, None)).returncode == 0
