import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def synthetic_model_dir(tmp_path_factory) -> Path:
    """A model directory in the runtime format: random small encoder, the real tokenizer (max_len 16)."""
    import shutil

    from runtime.format import TOKENIZER_FILES
    from compression.weights import base_model_dir
    from runtime.format import save_model
    from runtime.synthetic import MINILM_CONFIG, random_tensors

    d = tmp_path_factory.mktemp("synthetic_model")
    cfg = {**MINILM_CONFIG, "num_layers": 1, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64, "max_position": 64}
    save_model(d, random_tensors(cfg, 0.8, seed=3), config=cfg, labels=["negative", "neutral", "positive"], max_len=16, demojize=True, sparsity=0.8)
    for f in TOKENIZER_FILES:
        shutil.copy2(base_model_dir() / f, d / f)
    return d


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (``stream.pglocal``: initdb in a temp dir, pg_ctl on a
    Unix socket). ``make test`` installs Debian's postgresql when it is missing; without it these
    tests fail (they are not skipped)."""
    from stream.pglocal import LocalPostgres

    pg = LocalPostgres().start()
    yield pg
    pg.stop()


def new_pg_database(pg) -> str:
    """A fresh, empty database on ``pg``; returns its URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"  # unique whichever module object (conftest, tests.conftest) calls
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return pg.url.replace(f"/{pg.db}?", f"/{name}?")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    """A store location for each engine: an SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "db.sqlite")
    return new_pg_database(request.getfixturevalue("pg_server"))
