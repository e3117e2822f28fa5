"""The RAG store against a real PostgreSQL + pgvector: tenants, filters and the vector index
inside the SQL, atomic chunk replacement, keyset listing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aifleet.embedded import EmbeddedPostgres
from tests.support.rag import DIMS, RagDb, document, embedded, near, unit
from workers.rag import search_sql
from workers.rag.records import Hit
from workers.rag.search_sql import VectorSql, ensure_vector_index
from workers.rag.store import DocumentExists, RagStore, VersionMoved

V = VectorSql(DIMS)


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        assert await ensure_vector_index(found.pool, V)
        yield found


@pytest.fixture
def store(db: RagDb) -> RagStore:
    return RagStore(db.pool)


@pytest.fixture
def tenant() -> str:
    return "s" + uuid.uuid4().hex[:12]


async def nothing(conn: Any) -> None:
    return None


async def search(
    store: RagStore, tenant: str, vector: list[float] | None, text: str = "", **kw: Any
) -> list[Hit]:
    hits, _ = await search_sql.search(
        store.pool,
        tenant,
        "english",
        vector_sql=V,
        model=kw.pop("model", "m"),
        query_vector=vector,
        query_text=text,
        as_written=False,
        candidates=kw.pop("candidates", 10),
        filters=kw.pop("filters", {}),
        vector_leg=kw.pop("vector_leg", vector is not None),
        keyword_leg=kw.pop("keyword_leg", bool(text)),
        embeddings=False,
        ef_search=100,
        keyword_candidates=kw.pop("keyword_candidates", search_sql.KEYWORD_CANDIDATES),
    )
    return hits


async def test_document_and_chunks_are_stored_with_text_offsets_and_a_corpus_version(
    store: RagStore, db: RagDb, tenant: str
) -> None:
    """A created document is ready, its chunks keep their text and offsets, and the tenant's
    corpus version moves."""
    doc = document("d1", ["first paragraph", "second one"], metadata={"lang": "en"})
    row, _ = await store.create_ready(tenant, doc, embedded(doc, [unit("a"), unit("b")]))
    assert (row.status, row.version, row.chunk_count, row.embedding_dims) == ("ready", 1, 2, DIMS)
    chunks = await db.chunk_rows(tenant, "d1")
    for c in chunks:
        assert doc.content[c["start_char"] : c["end_char"]] == c["text"]
    assert await store.corpus_version(tenant) == 1
    got = await store.get(tenant, "d1", content=True)
    assert got is not None
    assert got.content == doc.content
    assert got.metadata == {"lang": "en"}


async def test_the_same_id_is_taken_within_a_tenant_only(
    store: RagStore, db: RagDb, tenant: str
) -> None:
    """A second create of an id conflicts and changes nothing; another tenant may use the
    same id."""
    doc = document("same", ["x"])
    await store.create_ready(tenant, doc, embedded(doc, [unit("x")]))
    again = document("same", ["y z", "w"])
    with pytest.raises(DocumentExists):
        await store.create_ready(tenant, again, embedded(again, [unit("y"), unit("w")]))
    assert await store.corpus_version(tenant) == 1
    assert [c["text"] for c in await db.chunk_rows(tenant, "same")] == ["x"]
    assert await assert_statistics_match_the_chunks(db, tenant) == {"titl": 1, "x": 1}
    await store.create_ready("o" + tenant, doc, embedded(doc, [unit("x")]))
    assert await store.get("other" + tenant, "same") is None


async def test_a_rare_tenant_still_gets_its_top_k_from_the_shared_index(
    store: RagStore, tenant: str
) -> None:
    """2,000 chunks of another tenant right next to the query, 30 of ours farther away: the
    iterative HNSW scan still returns k of ours and none of theirs."""
    query = unit("q")
    crowd = "c" + tenant
    for d in range(20):
        doc = document(f"crowd{d}", [f"p{i}" for i in range(100)])
        vectors = [near(query, f"{d}-{i}", 0.3) for i in range(100)]
        await store.create_ready(crowd, doc, embedded(doc, vectors))
    for d in range(3):
        doc = document(f"own{d}", [f"o{i}" for i in range(10)])
        vectors = [near(query, f"own{d}-{i}", 1.5) for i in range(10)]
        await store.create_ready(tenant, doc, embedded(doc, vectors))
    hits = await search(store, tenant, query, candidates=10)
    assert len(hits) == 10
    assert all(h.document_id.startswith("own") for h in hits)


async def test_metadata_filters_apply_inside_both_legs(store: RagStore, tenant: str) -> None:
    """Equality, `in` and ranges keep only matching documents, in the vector and keyword legs."""
    query = unit("filters")
    for i, (lang, year) in enumerate([("en", 1999), ("de", 2005), ("en", 2010), ("fr", 2020)]):
        doc = document(f"f{i}", [f"kafka retention {lang}"], metadata={"lang": lang, "year": year})
        await store.create_ready(tenant, doc, embedded(doc, [near(query, str(i), 0.1)]))

    async def ids(filters: dict[str, Any], **kw: Any) -> set[str]:
        return {
            h.document_id
            for h in await search(store, tenant, query, "kafka", filters=filters, **kw)
        }

    assert await ids({"lang": "en"}) == {"f0", "f2"}
    assert await ids({"lang": {"$in": ["de", "fr"]}}) == {"f1", "f3"}
    assert await ids({"year": {"$gte": 2005, "$lt": 2020}}) == {"f1", "f2"}
    assert await ids({"year": {"$gt": "2000"}}) == set()  # a string bound never matches numbers
    assert await ids({"lang": "en"}, vector_leg=False) == {"f0", "f2"}
    assert await ids({"lang": "en"}, keyword_leg=False) == {"f0", "f2"}


async def test_keyword_leg_ors_the_terms_of_a_question(store: RagStore, tenant: str) -> None:
    """A natural-language question matches chunks containing any of its terms."""
    for i, text in enumerate(["jetstream stores streams", "valkey caches keys", "unrelated"]):
        doc = document(f"k{i}", [text])
        await store.create_ready(tenant, doc, embedded(doc, [unit(text)]))
    hits = await search(store, tenant, None, "how do jetstream and valkey work?")
    assert {h.document_id for h in hits} == {"k0", "k1"}
    assert all(h.similarity is None and h.vector_rank is None for h in hits)


async def test_keyword_leg_scores_a_bounded_set_led_by_the_rarest_terms(
    store: RagStore, tenant: str
) -> None:
    """With a budget of 5 chunks, a question of a common and a rare term scans the rare
    term's chunks only (the common one's 20 would overflow it); a question of the common term
    alone scores at most 5 chunks; an unbounded budget scores them all."""
    texts = [f"streams replicate message {i}" for i in range(20)] + ["streams of zebras"]
    doc = document("many", texts)
    await store.create_ready(tenant, doc, embedded(doc, [unit(t) for t in texts]))
    rare = await search(store, tenant, None, "zebras in streams", keyword_candidates=5)
    assert [h.ordinal for h in rare] == [20]
    common = await search(store, tenant, None, "streams", keyword_candidates=5, candidates=50)
    assert len(common) == 5
    everything = await search(store, tenant, None, "zebras in streams", candidates=50)
    assert len(everything) == 21
    best = min(everything, key=lambda h: h.keyword_rank or 0)
    assert best.ordinal == 20  # both terms: the best BM25 score


async def test_replacing_chunks_is_atomic_under_concurrent_search(
    store: RagStore, tenant: str
) -> None:
    """While a document's chunks are replaced again and again, every search sees exactly one
    version's chunks (all of them), never a mix or a partial set."""
    query = unit("atomic")
    sizes = {1: 3, 2: 7}
    doc = document("a", [f"v1 part {i}" for i in range(3)])
    row, _ = await store.create_ready(
        tenant, doc, embedded(doc, [near(query, f"1-{i}", 0.2) for i in range(3)])
    )
    version = row.version
    stop = asyncio.Event()
    seen: list[set[int]] = []

    async def reader() -> None:
        while not stop.is_set():
            hits = await search(store, tenant, query, "part", candidates=20)
            versions = {h.version for h in hits}
            assert len(versions) == 1, versions
            (v,) = versions
            assert len(hits) == sizes[2 - v % 2], (v, len(hits))
            seen.append(versions)

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    for _ in range(30):
        n = sizes[2 - (version + 1) % 2]
        new = document("a", [f"v{version + 1} part {i}" for i in range(n)])
        vectors = [near(query, f"{version}-{i}", 0.2) for i in range(n)]
        row, _ = await store.replace(
            tenant, new, expected_version=version, embedded=embedded(new, vectors), stage=nothing
        )
        version = row.version
        await asyncio.sleep(0)
    stop.set()
    await asyncio.gather(*readers)
    assert version == 31
    assert len(seen) > 10


async def test_a_stale_expected_version_changes_nothing(store: RagStore, tenant: str) -> None:
    """An update based on an old version is refused whole (the transaction rolls back)."""
    doc = document("v", ["one"])
    await store.create_ready(tenant, doc, embedded(doc, [unit("v")]))
    new = document("v", ["two", "three"])
    with pytest.raises(VersionMoved):
        await store.replace(
            tenant,
            new,
            expected_version=5,
            embedded=embedded(new, [unit("2"), unit("3")]),
            stage=nothing,
        )
    got = await store.get(tenant, "v", content=True)
    assert got is not None
    assert (got.version, got.chunk_count, got.content) == (1, 1, "one")


async def test_delete_removes_the_document_and_every_chunk(
    store: RagStore, db: RagDb, tenant: str
) -> None:
    """Delete reports the version and chunks removed; nothing of the document remains."""
    doc = document("gone", ["a", "b", "c"])
    await store.create_ready(tenant, doc, embedded(doc, [unit(x) for x in "abc"]))

    async def stage(conn: Any, version: int, chunks: int) -> tuple[int, int]:
        return version, chunks

    assert await store.delete(tenant, "gone", stage) == (1, 3)
    assert await store.delete(tenant, "gone", stage) is None
    assert await db.chunk_rows(tenant, "gone") == []


async def test_the_keyword_statistics_follow_every_write(
    store: RagStore, db: RagDb, tenant: str
) -> None:
    """After creates, a replacement, a retitling and a delete, the tenant's lexeme counts and
    corpus totals are those of its stored chunks."""
    a = document("a", ["alpha beta", "beta gamma"])
    b = document("b", ["gamma delta"])
    await store.create_ready(tenant, a, embedded(a, [unit("1"), unit("2")]))
    await store.create_ready(tenant, b, embedded(b, [unit("3")]))
    new = document("a", ["epsilon beta", "zeta"])
    await store.replace(
        tenant,
        new,
        expected_version=1,
        embedded=embedded(new, [unit("4"), unit("5")]),
        stage=nothing,
    )
    retitled = document("a", ["epsilon beta", "zeta"], title="Omega theta")
    await store.replace(tenant, retitled, expected_version=2, embedded=None, stage=nothing)

    async def stage(conn: Any, version: int, chunks: int) -> None:
        return None

    await store.delete(tenant, "b", stage)
    counted = await assert_statistics_match_the_chunks(db, tenant)
    assert "omega" in counted
    assert await db.pool.fetchval("SELECT chunks FROM rag.corpora WHERE tenant = $1", tenant) == 2


async def test_concurrent_writes_of_one_tenant_keep_the_statistics_exact(
    store: RagStore, db: RagDb, tenant: str
) -> None:
    """Creates, replacements and deletes sharing lexemes, run together, neither deadlock nor
    miscount: each takes the lexeme rows in one order, then the corpus row."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]

    def doc(i: int, turn: int) -> Any:
        parts = [" ".join(words[(i + turn + k) % 6 : (i + turn + k) % 6 + 3]) for k in range(3)]
        made = document(f"c{i}", parts)
        return made, embedded(made, [unit(f"{i}-{turn}-{k}") for k in range(3)])

    await asyncio.gather(*(store.create_ready(tenant, *doc(i, 0)) for i in range(8)))

    async def change(i: int) -> None:
        if i % 2:
            await store.delete(tenant, f"c{i}", lambda conn, version, chunks: nothing(conn))
        else:
            made, vectors = doc(i, 1)
            await store.replace(tenant, made, expected_version=1, embedded=vectors, stage=nothing)

    await asyncio.gather(
        *(change(i) for i in range(8)),
        *(store.create_ready(tenant, *doc(i, 2)) for i in range(8, 16)),
    )
    await assert_statistics_match_the_chunks(db, tenant)
    assert await store.corpus_version(tenant) == 8 + 8 + 8


async def assert_statistics_match_the_chunks(db: RagDb, tenant: str) -> dict[str, int]:
    """The tenant's lexeme counts and corpus totals equal a recount of its stored chunks;
    returns the counts."""
    async with db.pool.acquire() as conn:
        counted = await conn.fetch(
            "SELECT lexeme, chunks FROM rag.lexemes WHERE tenant = $1 ORDER BY lexeme", tenant
        )
        recomputed = await conn.fetch(
            "SELECT u.lexeme, count(*) FROM rag.chunks c, unnest(c.tsv) u WHERE c.tenant = $1"
            " GROUP BY u.lexeme ORDER BY u.lexeme",
            tenant,
        )
        totals = await conn.fetchrow(
            "SELECT chunks, lexemes FROM rag.corpora WHERE tenant = $1", tenant
        )
        actual = await conn.fetchrow(
            "SELECT count(*), coalesce(sum(length(tsv)), 0) FROM rag.chunks WHERE tenant = $1",
            tenant,
        )
    assert [tuple(r) for r in counted] == [tuple(r) for r in recomputed]
    assert tuple(totals) == tuple(actual) == (actual[0], sum(r["chunks"] for r in counted))
    return {r["lexeme"]: r["chunks"] for r in counted}


async def test_listing_pages_newest_first_with_filters(store: RagStore, tenant: str) -> None:
    """Keyset pages cover every matching document once, newest first."""
    for i in range(7):
        doc = document(f"l{i}", ["x"], source="wiki" if i % 2 else "web", metadata={"n": i})
        await store.create_ready(tenant, doc, embedded(doc, [unit(str(i))]))
    seen: list[str] = []
    after = None
    while True:
        rows = await store.list_documents(
            tenant, source="", status="", filters={}, after=after, limit=3
        )
        seen += [r.id for r in rows]
        if len(rows) < 3:
            break
        after = (rows[-1].created_at, rows[-1].id)
    assert seen == [f"l{i}" for i in reversed(range(7))]
    rows = await store.list_documents(
        tenant, source="wiki", status="ready", filters={"n": {"$gte": 3}}, after=None, limit=10
    )
    assert [r.id for r in rows] == ["l5", "l3"]


async def test_the_vector_leg_uses_the_hnsw_index_for_a_large_tenant(
    store: RagStore, tenant: str
) -> None:
    """With thousands of the tenant's chunks the nearest-neighbour subquery is planned on the
    HNSW expression index of its dimension (a tenant with few rows may be searched exactly)."""
    for d in range(20):
        doc = document(f"big{d}", [f"p{i}" for i in range(100)])
        vectors = [unit(f"big{d}-{i}") for i in range(100)]
        await store.create_ready(tenant, doc, embedded(doc, vectors))
    await store.pool.execute("ANALYZE rag.chunks")
    sql = search_sql.search_statement(
        V, vector=True, keyword=False, filters="TRUE", embeddings=False
    )
    plan = await store.pool.fetch(
        "EXPLAIN (COSTS OFF) " + sql, tenant, "m", unit("p"), "", "english", 10, False, 1000
    )
    lines = [r[0] for r in plan]
    assert any(V.index_name in line for line in lines), [line[:120] for line in lines]
