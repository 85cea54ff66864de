# Two commands a newcomer needs: `make demo` and `make test`. Both install what they
# need first (Debian packages and a Python venv in .venv) via scripts/install-deps.sh.

.PHONY: demo test setup plan lint clean

setup:
	bash scripts/install-deps.sh

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

plan: setup
	.venv/bin/virtualpod plan -f manifests/examples/guaranteed.yaml \
	  -f manifests/examples/burstable.yaml -f manifests/examples/besteffort.yaml \
	  -f manifests/examples/multi-container.yaml -f manifests/examples/init-container.yaml \
	  -f manifests/examples/workload.yaml

lint: setup
	.venv/bin/ruff check operator tests bench
	.venv/bin/ruff format --check operator tests bench
	.venv/bin/mypy

clean:
	-bash scripts/libvirtd.sh stop
	rm -rf .venv .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
