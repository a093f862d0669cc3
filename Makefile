# nnprak: the two commands of the README are `make run` and `make test`; both set up .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nnprak-installed
export PYTHONHASHSEED := 0
# make run PHOTOS=path/to/folder: your own photos (<folder>/<person>/<photo>) instead of LFW
PHOTOS ?=
PHOTOS_ARG := $(if $(PHOTOS),--photos "$(PHOTOS)")

TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended texlive-pictures poppler-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-tex setup-fonts run test bench report slides lab kernel clean-smoke

setup: $(STAMP)  ## create .venv (when missing) and install the pinned dependencies; a second run takes seconds

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11" \
	  "(Debian/Ubuntu: apt-get install python3.11 python3.11-venv; or conda env create -f environment.yml)" \
	  "or name it: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed: install its venv" \
	  "module (Debian/Ubuntu: apt-get install python3.11-venv), then run make again" >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# facenet-pytorch pins torch<2.3/numpy<2/Pillow<10.3, which conflict with the stack: install it without deps
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(MAKE) --no-print-directory kernel
	@touch $(STAMP)

kernel:  ## register this .venv as the Jupyter kernel "nnprak" (for JupyterLab, VS Code or another Jupyter install)
	$(PY) -m ipykernel install --user --name nnprak --display-name "Python (nnprak)"

# make lab LAB_ARGS="--no-browser --port 8899": extra options for jupyter lab
LAB_ARGS ?=
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)  # JupyterLab refuses root without it (containers)
lab: setup  ## start JupyterLab on notebooks/ with this project's environment (kernel "nnprak")
	@# the kernel "nnprak" is registered per user: another checkout may have pointed it at its own .venv
	@$(PY) -m jupyter kernelspec list --json 2>/dev/null | $(PY) -c 'import json, os, sys; \
	  k = json.load(sys.stdin)["kernelspecs"].get("nnprak"); \
	  sys.exit(0 if k and k["spec"]["argv"][0] == os.path.abspath(sys.argv[1]) else 1)' $(PY) \
	  || $(MAKE) --no-print-directory kernel
	cd notebooks && ../$(PY) -m jupyterlab $(LAB_ROOT) $(LAB_ARGS)

setup-tex:  ## install the Debian TeX packages that build report/report.pdf and slides.pdf (beamer needs pgf: texlive-pictures)
	@command -v latexmk >/dev/null && command -v pdftoppm >/dev/null && kpsewhich pgfcore.sty >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends $(TEX_PACKAGES) )

setup-fonts:  ## install a CJK font (fonts-noto-cjk) so Chinese/Japanese/Korean person names are drawn (skipped when one is there)
	@fc-list :lang=zh family 2>/dev/null | grep -q . || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends fontconfig fonts-noto-cjk )

run: setup setup-tex setup-fonts  ## execute notebooks 01-06 with the default profile (PHOTOS=folder: own photos), then the report and slides
	$(PY) -m nnprak run --profile default $(PHOTOS_ARG)
	$(PY) -m nnprak report --profile default $(PHOTOS_ARG)

slides: setup setup-tex  ## build report/slides.pdf (16:9 Beamer) from the figures, tables and numbers of the last run
	$(PY) -m nnprak report --profile default --only slides $(PHOTOS_ARG)

report: setup setup-tex setup-fonts  ## regenerate figures and tables from results/ (notebook 06), build report.pdf and slides.pdf
	$(PY) -m nnprak run --profile default --only 06 $(PHOTOS_ARG)
	$(PY) -m nnprak report --profile default $(PHOTOS_ARG)

test: setup setup-tex setup-fonts  ## pytest for the package + nbval on the notebooks, with the smoke profile
	NNPRAK_PROFILE=smoke NNPRAK_PHOTOS= $(PY) -m pytest -q tests
	NNPRAK_PROFILE=smoke NNPRAK_PHOTOS= $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

bench: setup  ## crop/embedding throughput, LFW verification on all 6,000 pairs, then refresh the README's table
	$(PY) bench/bench_crop.py --json results/bench_crop.json
	$(PY) bench/bench_embed.py --out results/bench_embed.json
	$(PY) bench/bench_verification.py --errors 12 --out results/bench_verification.json
	$(PY) -m nnprak bench --profile default --write

clean-smoke:  ## remove the smoke profile's scratch outputs
	rm -rf build/smoke
