"""Maps the top-level folders (the architecture) onto the single `medrun` namespace.

`cli/` installs as `medrun.cli`, `pipelines/ad_lite/` as `medrun.pipelines.ad_lite`, and so on, so nothing
installs a generic top-level `models` or `metrics` package. Packages are found here rather than listed in
pyproject.toml so that a new pipeline or dataset package needs no packaging edit.
"""

from setuptools import find_packages, setup

FOLDERS = ["cli", "manifests", "pipelines", "models", "metrics", "datasets", "artifacts"]

package_dir = {"medrun": "medrun"}
packages = ["medrun"]
for folder in FOLDERS:
    package_dir[f"medrun.{folder}"] = folder
    packages += [f"medrun.{folder}"] + [f"medrun.{folder}.{sub}" for sub in find_packages(folder)]

setup(
    package_dir=package_dir,
    packages=packages,
    package_data={"medrun.manifests": ["*/*.yaml"]},
)
