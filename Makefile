# nnprak: the two commands of the README are `make run` and `make test`; both set up .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nnprak-installed
export PYTHONHASHSEED := 0

TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended poppler-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-tex run test bench report clean-smoke

setup: $(STAMP)  ## create .venv (when missing) and install the pinned dependencies; a second run takes seconds

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# facenet-pytorch pins torch<2.3/numpy<2/Pillow<10.3, which conflict with the stack: install it without deps
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup-tex:  ## install the Debian TeX packages that build report/report.pdf (skipped when latexmk is there)
	@command -v latexmk >/dev/null && command -v pdftoppm >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends $(TEX_PACKAGES) )

run: setup setup-tex  ## execute notebooks 01-06 with the default profile, then build report/report.pdf
	$(PY) -m nnprak run --profile default
	$(PY) -m nnprak report --profile default

report: setup setup-tex  ## regenerate figures and tables from results/ (notebook 06) and build report/report.pdf
	$(PY) -m nnprak run --profile default --only 06
	$(PY) -m nnprak report --profile default

test: setup setup-tex  ## pytest for the package + nbval on the notebooks, with the smoke profile
	NNPRAK_PROFILE=smoke $(PY) -m pytest -q tests
	NNPRAK_PROFILE=smoke $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

bench: setup  ## crop/embedding throughput, LFW verification on all 6,000 pairs, then refresh the README's table
	$(PY) bench/bench_crop.py --json results/bench_crop.json
	$(PY) bench/bench_embed.py --out results/bench_embed.json
	$(PY) bench/bench_verification.py --landmarks mtcnn --fallback dlib --flip --errors 12 --out results/bench_verification.json
	$(PY) -m nnprak bench --profile default --write

clean-smoke:  ## remove the smoke profile's scratch outputs
	rm -rf build/smoke
