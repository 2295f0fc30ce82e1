"""Micro-measurements of the PostgreSQL read path behind docs/benchmarks.md: CPU µs per authenticated read.

    taskset -c 0 python bench/micro_pg.py

Starts a throwaway cluster, 1 000 portals, and compares the API's three ``db.read`` calls with one prebuilt
joined SELECT through ``Database.read``, without pool pre-ping, in autocommit, and on raw psycopg.
"""
from pathlib import Path
import sys, time, asyncio, tempfile
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
import sqlalchemy as sa
from smtpsettings.store.database import Database
from smtpsettings.store import accounts, smtp
from smtpsettings.store.tables import portals, users, sessions, smtp_settings
from smtpsettings.domain.passwords import hash_secret
JOINED = (sa.select(portals.c.id, portals.c.hostname, portals.c.is_default, users.c.id.label("uid"), users.c.email, users.c.display_name, users.c.role,
    sessions.c.expires_at, smtp_settings.c.host, smtp_settings.c.port, smtp_settings.c.sender_address, smtp_settings.c.sender_display_name,
    smtp_settings.c.credentials_user_name, smtp_settings.c.enable_ssl, smtp_settings.c.enable_auth, smtp_settings.c.use_ntlm)
    .select_from(portals.join(sessions, sa.and_(sessions.c.portal_id == portals.c.id, sessions.c.token_hash == sa.bindparam("th")))
    .join(users, users.c.id == sessions.c.user_id).outerjoin(smtp_settings, smtp_settings.c.portal_id == portals.c.id))
    .where(portals.c.hostname == sa.bindparam("host")))
with PgCluster() as pg:
    url = pg.create_database("proto")
    d = Path(tempfile.mkdtemp(prefix="smtpsettings-micro-pg-")); pop = populate(url, d, 1000)
    host, tok = pop.creds[500]; th = hash_secret(tok)
    async def main():
        db = Database(url)
        nopre = Database(url); 
        from sqlalchemy.ext.asyncio import create_async_engine
        eng_nopre = create_async_engine(db.url, pool_size=10, max_overflow=0, pool_pre_ping=False)
        async def t(label, fn, N=1500):
            await fn()
            s = time.process_time()
            for _ in range(N): await fn()
            print(f"{label:60s} {(time.process_time()-s)/N*1e6:8.1f} µs CPU")
        portal = await db.read(lambda c: accounts.find_portal_for_host(c, host))
        async def three():
            p = await db.read(lambda c: accounts.find_portal_for_host(c, host))
            u = await db.read(lambda c: accounts.user_by_session(c, p.id, th))
            s = await db.read(lambda c: smtp.get_settings(c, p.id))
        await t("now: 3 x db.read (pre-ping, BEGIN/COMMIT, built per call)", three, 500)
        await t("1 x db.read(prebuilt joined)", lambda: db.read(lambda c: c.execute(JOINED, {"th": th, "host": host}).first()))
        async def nopre_tx():
            async with eng_nopre.connect() as c, c.begin():
                return (await c.execute(JOINED, {"th": th, "host": host})).first()
        await t("joined, no pre-ping, BEGIN/COMMIT (async execute)", nopre_tx)
        eng_ac = eng_nopre.execution_options(isolation_level="AUTOCOMMIT")
        async def ac():
            async with eng_ac.connect() as c:
                return (await c.execute(JOINED, {"th": th, "host": host})).first()
        await t("joined, no pre-ping, autocommit", ac)
        import psycopg
        sql = str(JOINED.compile(dialect=db.async_engine.dialect, compile_kwargs={})).replace("%(th)s", "%s").replace("%(host)s", "%s")
        conn = await psycopg.AsyncConnection.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=proto", autocommit=True)
        async def rawpg():
            cur = await conn.execute(sql, (th, host), prepare=True)
            return await cur.fetchone()
        await t("raw psycopg connection, autocommit, prepared joined SELECT", rawpg, 3000)
        await conn.close()
        await db.dispose_async(); await eng_nopre.dispose()
    asyncio.run(main())
