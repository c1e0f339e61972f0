"""The wheel is the product: built from the checkout, checked, installed without the source tree
and found by npe2 (the pitfall many plugins hit: a wheel without its manifest).

The same checks run on the files of ``make dist``: ``python tests/test_packaging.py dist``.
CI's compatibility matrix (``.ci/matrix``) then runs the napari tests on that wheel in fresh
environments with napari's minimum and latest versions.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_kmeans"
# nothing of a developer's machine or of the test suite goes into a distribution
FORBIDDEN = re.compile(
    r"(^|/)(\.venv|venv|\.git|\.pytest_cache|\.ruff_cache|\.hypothesis|__pycache__|build|dist)/"
    r"|\.py[cod]$|(^|/)\.coverage|(^|/)\.DS_Store$"
)


def version() -> str:
    text = (PACKAGE / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def check_wheel(wheel: Path) -> None:
    """The wheel holds the package with its manifest and icon, the entry point, the version of
    _version.py, and no test, venv or cache files."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("napari_kmeans/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        assert zf.read("napari_kmeans/icon.png") == (ROOT / "docs/images/icon.png").read_bytes()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry = zf.read(entry_points).decode()
    assert re.search(rf"^Version: {re.escape(version())}$", metadata, re.M)
    assert re.search(r"^Project-URL: User Support, https://", metadata, re.M)
    assert "[napari.manifest]\nnapari-kmeans = napari_kmeans:napari.yaml" in entry
    assert "napari_kmeans/__init__.py" in names and "napari_kmeans/_napari/_qt/widget.py" in names
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"napari_kmeans", f"napari_kmeans-{version()}.dist-info"}, tops
    bad = [n for n in names if FORBIDDEN.search(n)]
    assert not bad, f"the wheel holds files it should not: {bad[:10]}"


def check_sdist(sdist: Path) -> None:
    """The sdist holds what a build from it needs (the manifest copy too), and no junk."""
    with tarfile.open(sdist) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    for needed in ("pyproject.toml", "napari.yaml", "src/napari_kmeans/napari.yaml",
                   "src/napari_kmeans/icon.png", "README.md", "LICENSE", "CHANGELOG.md",
                   "CITATION.cff"):  # fmt: skip
        assert needed in names, f"{needed} missing from {sdist.name}"
    bad = [n for n in names if FORBIDDEN.search(n)]
    assert not bad, f"the sdist holds files it should not: {bad[:10]}"


def check_dist(folder: Path) -> tuple[Path, Path]:
    (wheel,) = folder.glob("napari_kmeans-*.whl")
    (sdist,) = folder.glob("napari_kmeans-*.tar.gz")
    assert wheel.name.startswith(f"napari_kmeans-{version()}-py3-none-any")
    check_wheel(wheel)
    check_sdist(sdist)
    return wheel, sdist


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """sdist and wheel built from the checkout (the wheel from the sdist, as `python -m build`
    does), offline: the build backend of the test environment, no isolation."""
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_sdist_and_wheel_hold_what_they_should(dist):
    check_dist(dist)


def test_twine_accepts_the_distributions(dist):
    pytest.importorskip("twine")
    files = sorted(map(str, dist.iterdir()))
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


INSTALLED_CHECK = """
import importlib.metadata as md, importlib.resources, sys
from pathlib import Path
import napari_kmeans
from npe2 import PluginManifest

prefix = Path(sys.prefix).resolve()
where = Path(napari_kmeans.__file__).resolve()
assert prefix in where.parents, f"napari_kmeans imported from {where}, not from {prefix}"
assert prefix in Path(md.distribution("napari-kmeans").locate_file("")).resolve().parents
manifest = PluginManifest.from_distribution("napari-kmeans")
manifest.validate_imports()
icon = importlib.resources.files("napari_kmeans").joinpath("icon.png").read_bytes()
assert icon.startswith(b"\\x89PNG")
print(manifest.name, manifest.display_name, manifest.icon, len(manifest.contributions.commands))
"""


def test_the_installed_wheel_is_found_by_npe2(dist, tmp_path):
    """Install the wheel alone (--no-deps) into a new venv whose other packages come from the
    test environment, run from outside the checkout, and load the plugin through npe2."""
    wheel, _ = check_dist(dist)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    python = bindir / ("python.exe" if sys.platform == "win32" else "python")
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # The test environment's packages (napari, npe2, ...) as a plain path: its .pth files, and so
    # an editable install of this checkout, are not processed, and the wheel's copy comes first.
    (site / "zz_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [str(python), "-c", INSTALLED_CHECK], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[:2] == ["napari-kmeans", "napari"], done.stdout
    assert "napari_kmeans:icon.png" in done.stdout


def test_the_icon_is_a_square_png_and_its_two_copies_match():
    icon = (ROOT / "docs" / "images" / "icon.png").read_bytes()
    assert icon == (PACKAGE / "icon.png").read_bytes(), "run: make docs-images"
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(icon[16:20], "big"), int.from_bytes(icon[20:24], "big")
    assert width == height >= 128


def test_the_version_is_written_in_one_place():
    """_version.py holds it; hatch reads it from there; nothing else repeats it."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'path = "src/napari_kmeans/_version.py"' in pyproject
    needle = re.compile(rf"(?<![\d.]){re.escape(version())}(?![\d.])")
    for name in ("pyproject.toml", "napari.yaml", "CITATION.cff", "README.md", "Makefile",
                 ".github/workflows/test_and_deploy.yml"):  # fmt: skip
        path = ROOT / name
        if path.exists():
            assert not needle.search(path.read_text()), f"{name} repeats the version"
    repeats = [
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if p.name != "_version.py" and needle.search(p.read_text())
    ]
    assert not repeats, f"these repeat the version instead of importing it: {repeats}"


RAW = "https://raw.githubusercontent.com/napari-kmeans/napari-kmeans/main/"
REPO = "https://github.com/napari-kmeans/napari-kmeans"


def test_the_readme_reads_well_on_pypi_and_the_hub():
    """The README is the description on PyPI and the napari hub, where relative paths break:
    pictures are absolute URLs to the repository's raw files (which exist here), links are
    absolute, and a picture comes within the first screen, after what the plugin does."""
    text = (ROOT / "README.md").read_text()
    assert REPO in (ROOT / "pyproject.toml").read_text()
    images = re.findall(r"!\[([^\]]*)\]\(([^)\s]+)\)", text)
    assert len(images) >= 3
    for alt, url in images:
        assert alt, f"{url} has no alternative text"
        assert url.startswith(RAW), f"{url} is not an absolute URL to the raw files"
        assert (ROOT / url.removeprefix(RAW)).is_file(), f"{url}: no such file in the checkout"
    links = re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)
    relative = [u for u in links if not u.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links break on PyPI and the hub: {relative}"
    for url in links:
        if url.startswith(f"{REPO}/blob/main/"):
            assert (ROOT / url.removeprefix(f"{REPO}/blob/main/")).exists(), url
    first_screen = "\n".join(text.splitlines()[:12])
    assert "![" in first_screen and "k-means" in first_screen
    for section in ("## Quick start", "## Install", "## Features", "## Citation", "## Licence"):
        assert f"\n{section}\n" in text, f"README has no '{section}' section"


def test_the_plugin_template_conventions():
    """pre-commit (ruff lint and format, napari-plugin-checks), the workflow (tests on three OSes
    with the commands of `make test`, build and inspect, trusted publishing on a tag), the
    changelog and the citation file."""
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    ids = {hook["id"] for repo in hooks["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "napari-plugin-checks"} <= ids
    flow = yaml.safe_load((ROOT / ".github/workflows/test_and_deploy.yml").read_text())
    jobs = flow["jobs"]
    strategy = jobs["test"]["strategy"]["matrix"]
    oses = set(strategy["platform"]) | {entry["platform"] for entry in strategy["include"]}
    assert {"ubuntu-latest", "macos-latest", "windows-latest"} <= oses
    commands = [step.get("run", "") for step in jobs["test"]["steps"]]
    assert 'python -m pip install -e ".[test]"' in commands and "python -m pytest" in commands
    makefile = (ROOT / "Makefile").read_text()
    assert '$(PIP) install -e ".[test]"' in makefile and "$(PY) -m pytest" in makefile
    uses = [step.get("uses", "") for step in jobs["build-and-inspect-package"]["steps"]]
    assert any(u.startswith("hynek/build-and-inspect-python-package") for u in uses)
    deploy = jobs["deploy"]
    assert deploy["permissions"] == {"id-token": "write"} and "tags/v" in deploy["if"]
    assert any("pypa/gh-action-pypi-publish" in step.get("uses", "") for step in deploy["steps"])
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["repository-code"] == REPO
    assert "version" not in citation  # one place: _version.py


if __name__ == "__main__":  # make dist: check the files it built
    wheel, sdist = check_dist(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist"))
    print(f"checked {wheel.name} and {sdist.name}: manifest, icon, entry point, version, no junk")
