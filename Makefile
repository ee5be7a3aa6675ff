# medrun — set-up, demo, tests, smoke runs and benchmarks. Everything installs into $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
MEDRUN := $(VENV)/bin/medrun
# CPU wheel that lies on this machine's disk. On a CUDA machine use the PyPI build for your CUDA instead, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url <PyTorch wheel index for your CUDA version>"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=30
export MEDRUN_RUNS ?= $(CURDIR)/runs

.PHONY: setup demo test smoke bench lint clean

setup: $(VENV)/.medrun-setup

$(VENV)/.medrun-setup: pyproject.toml setup.py
	# open3d (endo-depth, drivpocket) loads Debian's libusb; install it where apt-get can (root on a bare machine)
	@ldconfig -p 2>/dev/null | grep -q libusb-1.0 || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null) || \
		echo "note: libusb-1.0 is missing; install it (apt-get install libusb-1.0-0) for open3d"; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so that resolving the project never pulls a multi-GB CUDA build
	$(PY) -m pip install -q $(TORCH_SPEC)
	# the plain OpenCV build and the contrib one install the same cv2 module: drop an old plain one first
	$(PY) -m pip uninstall -y -q opencv-python-headless >/dev/null 2>&1 || true
	# setuptools' "Editable installation" notice (folders named like the package may shadow it) is information only:
	# setup.py maps each top-level folder onto medrun.* on purpose
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(MEDRUN) train ad-lite --dataset oasis --fixture
	$(MEDRUN) eval ad-lite --dataset oasis --fixture

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

smoke: setup
	$(MEDRUN) smoke

bench: setup
	$(PY) benchmarks/run.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
