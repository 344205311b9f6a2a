# The three commands of the README's quick start, plus the authors' helpers.
PYTHON ?= python
PIP_EXTRA ?=  # e.g. --extra-index-url https://download.pytorch.org/whl/cpu (see requirements.txt)

.PHONY: install book test test-fast notebooks lint bench

install:  ## Python packages (pinned) + lmlib itself + the book's offline JS assets
	$(PYTHON) -m pip install -r requirements.txt -e . $(PIP_EXTRA) && npm ci --no-audit --no-fund

book:  ## build the HTML book into _build/html (renders stored outputs, never executes)
	$(PYTHON) tools/build_book.py

test:  ## library tests, every chapter re-executed by nbval, book build + browser check
	$(PYTHON) -m pytest --nbval

test-fast:  ## the library tests only: no chapters, book build, benchmark scripts or slow tests (torch.compile)
	$(PYTHON) -m pytest tests -q -m "not book and not bench and not slow"

bench:  ## the benchmark scripts at tiny settings (also part of `make test`)
	$(PYTHON) -m pytest tests/test_bench.py -q -m bench

notebooks:  ## re-execute the chapters in place (authors)
	$(PYTHON) tools/execute_notebooks.py

lint:
	$(PYTHON) -m ruff check .
