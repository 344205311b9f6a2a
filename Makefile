# The three commands of the README's quick start, plus the authors' helpers.
PYTHON ?= python

.PHONY: install book test notebooks lint bench

install:  ## Python packages (pinned) + lmlib itself + the book's offline JS assets
	$(PYTHON) -m pip install -r requirements.txt -e . && npm ci --no-audit --no-fund

book:  ## build the HTML book into _build/html (renders stored outputs, never executes)
	$(PYTHON) tools/build_book.py

test:  ## library tests, every chapter re-executed by nbval, book build + browser check
	$(PYTHON) -m pytest --nbval

notebooks:  ## re-execute the chapters in place (authors)
	$(PYTHON) tools/execute_notebooks.py

lint:
	$(PYTHON) -m ruff check .
