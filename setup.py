"""Maps the top-level folders (the architecture) onto the single `medrun` namespace.

`cli/` installs as `medrun.cli`, `pipelines/ad_lite/` as `medrun.pipelines.ad_lite`, and so on, so nothing
installs a generic top-level `models` or `metrics` package. Packages are found here rather than listed in
pyproject.toml so that a new pipeline or dataset package needs no packaging edit.
"""

from pathlib import Path

from setuptools import find_packages, setup

FOLDERS = ["cli", "manifests", "pipelines", "models", "metrics", "datasets", "artifacts"]

package_dir = {"medrun": "medrun"}
packages = ["medrun"]
for folder in FOLDERS:
    package_dir[f"medrun.{folder}"] = folder
    packages += [f"medrun.{folder}"] + [f"medrun.{folder}.{sub}" for sub in find_packages(folder)]

# Manifest folders hold YAML, not code; those whose names are identifiers (``_base``, ``lorasam``) look importable,
# so they are listed as (data-only) packages to keep setuptools from warning that they would be ignored.
package_data = {"medrun.manifests": ["*/*.yaml"], "medrun.pipelines": ["*/paper.yaml"]}
# the HTML report's templates and scripts: data folders inside a package, listed so that setuptools installs them
for data_dir, files in (("artifacts/report/templates", ["*.html"]), ("artifacts/report/static", ["*.js", "*.css"])):
    name = "medrun." + data_dir.replace("/", ".")
    packages.append(name)
    package_dir[name] = data_dir
    package_data[name] = files
for sub in sorted(Path("manifests").iterdir()):
    if sub.is_dir() and sub.name.isidentifier() and not sub.name.startswith("__"):
        packages.append(f"medrun.manifests.{sub.name}")
        package_dir[f"medrun.manifests.{sub.name}"] = f"manifests/{sub.name}"
        package_data[f"medrun.manifests.{sub.name}"] = ["*.yaml"]

setup(
    package_dir=package_dir,
    packages=packages,
    package_data=package_data,
)
