"""Micro-measurements of the database layer behind docs/benchmarks.md ("where the time goes"), SQLite.

    taskset -c 0 python bench/micro_db.py [PORTALS]      # default 100000; the database is kept in /tmp for re-runs

CPU µs per call of the repository functions as the API calls them, of alternative shapes (one prebuilt
joined SELECT, a long-lived connection, raw sqlite3), the portal query's plan, and the request log line.
"""
from pathlib import Path
import sys, time, sqlite3, tempfile
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from smtpsettings.store.database import Database
from smtpsettings.store import accounts, smtp
from smtpsettings.domain.passwords import hash_secret
import sqlalchemy as sa
from smtpsettings.store.tables import portals, users, sessions, smtp_settings
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
d = Path(tempfile.gettempdir()) / f"smtpsettings-micro{n}"
if not (d/"smtpsettings.db").exists():
    pop = populate(sqlite_url(d), d, n); pop.write_creds(d/"creds.txt")
creds = [l.split() for l in (d/"creds.txt").read_text().splitlines()]
db = Database(sqlite_url(d))
host, tok = creds[len(creds)//2]; th = hash_secret(tok)
portal = db.read_sync(lambda c: accounts.find_portal_for_host(c, host))
def t(label, fn, N=3000):
    fn()
    s = time.process_time()
    for _ in range(N): fn()
    print(f"{label:45s} {(time.process_time()-s)/N*1e6:8.1f} µs")
t("read_sync(find_portal_for_host)", lambda: db.read_sync(lambda c: accounts.find_portal_for_host(c, host)), 1000 if n>10000 else 3000)
t("read_sync(user_by_session)", lambda: db.read_sync(lambda c: accounts.user_by_session(c, portal.id, th)))
t("read_sync(get_settings)", lambda: db.read_sync(lambda c: smtp.get_settings(c, portal.id)))
t("read_sync(noop)", lambda: db.read_sync(lambda c: None))
def three(c):
    p = accounts.find_portal_for_host(c, host); u = accounts.user_by_session(c, p.id, th); s = smtp.get_settings(c, p.id)
t("read_sync(all three in one txn)", lambda: db.read_sync(three), 1000 if n>10000 else 3000)
raw = sqlite3.connect(str(d/"smtpsettings.db"), isolation_level=None)
for row in raw.execute("EXPLAIN QUERY PLAN SELECT portals.id, portals.hostname, portals.is_default FROM portals WHERE portals.hostname = ? OR portals.is_default IS 1 ORDER BY portals.hostname = ? DESC LIMIT 1", (host, host)): print(row)
q = """SELECT p.id, p.hostname, p.is_default, u.id, u.email, u.display_name, u.role, s.expires_at,
 st.host, st.port, st.sender_address, st.sender_display_name, st.credentials_user_name, st.enable_ssl, st.enable_auth, st.use_ntlm
 FROM portals p JOIN sessions s ON s.portal_id = p.id AND s.token_hash = ? JOIN users u ON u.id = s.user_id
 LEFT JOIN smtp_settings st ON st.portal_id = p.id WHERE p.hostname = ?"""
t("raw sqlite3: one joined SELECT", lambda: raw.execute(q, (th, host)).fetchone(), 20000)
def rawtx():
    raw.execute("BEGIN"); raw.execute(q, (th, host)).fetchone(); raw.execute("COMMIT")
t("raw sqlite3: BEGIN + joined SELECT + COMMIT", rawtx, 20000)
t("raw sqlite3: portal OR-default query", lambda: raw.execute("SELECT id, hostname, is_default FROM portals WHERE hostname = ? OR is_default = 1 ORDER BY hostname = ? DESC LIMIT 1", (host, host)).fetchone(), 2000)
t("raw sqlite3: portal by hostname only", lambda: raw.execute("SELECT id, hostname, is_default FROM portals WHERE hostname = ?", (host,)).fetchone(), 20000)
JOINED = (sa.select(portals.c.id, portals.c.hostname, portals.c.is_default, users.c.id.label("uid"), users.c.email, users.c.display_name, users.c.role,
    sessions.c.expires_at, smtp_settings.c.host, smtp_settings.c.port, smtp_settings.c.sender_address, smtp_settings.c.sender_display_name,
    smtp_settings.c.credentials_user_name, smtp_settings.c.enable_ssl, smtp_settings.c.enable_auth, smtp_settings.c.use_ntlm)
    .select_from(portals.join(sessions, sa.and_(sessions.c.portal_id == portals.c.id, sessions.c.token_hash == sa.bindparam("th")))
    .join(users, users.c.id == sessions.c.user_id).outerjoin(smtp_settings, smtp_settings.c.portal_id == portals.c.id))
    .where(portals.c.hostname == sa.bindparam("host")))
PORTAL = sa.select(portals).where(portals.c.hostname == sa.bindparam("host"))
t("read_sync(prebuilt joined stmt)", lambda: db.read_sync(lambda c: c.execute(JOINED, {"th": th, "host": host}).first()))
t("read_sync(prebuilt portal-by-hostname)", lambda: db.read_sync(lambda c: c.execute(PORTAL, {"host": host}).first()))
conn = db.engine.connect()
def persistent():
    with conn.begin():
        return conn.execute(JOINED, {"th": th, "host": host}).first()
t("persistent Connection + begin + prebuilt joined", persistent)
def persistent_nobegin():
    r = conn.execute(JOINED, {"th": th, "host": host}).first(); conn.commit(); return r
t("persistent Connection, autobegin, prebuilt joined", persistent_nobegin)
raw = db.engine.raw_connection().driver_connection
sql = str(JOINED.compile(dialect=db.engine.dialect))
def rawtx():
    raw.execute("BEGIN"); r = raw.execute(sql, (th, host)).fetchone(); raw.execute("COMMIT"); return r
t("raw sqlite3 + compiled SQL + BEGIN/COMMIT", rawtx, 20000)
# logging
import structlog, io, os
from smtpsettings.logs import configure_logging
sys.stderr = open(os.devnull, "w")
configure_logging("json")
lg = structlog.get_logger("x")
t("structlog JSON request line (current config)", lambda: lg.info("request", request_id="0123456789abcdef", method="GET", path="/api/2.0/smtpsettings/smtp", status=200, duration_ms=1.23, client="127.0.0.1", portal="p000001.bench", user_id=5), 20000)
import msgspec
enc = msgspec.json.Encoder()
structlog.configure(processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=lambda o, **kw: enc.encode(o).decode())],
  wrapper_class=structlog.make_filtering_bound_logger(20), logger_factory=structlog.PrintLoggerFactory(file=sys.stderr), cache_logger_on_first_use=True)
lg = structlog.get_logger("y")
t("structlog JSON, msgspec serializer", lambda: lg.info("request", request_id="0123456789abcdef", method="GET", path="/api/2.0/smtpsettings/smtp", status=200, duration_ms=1.23, client="127.0.0.1", portal="p000001.bench", user_id=5), 20000)
import datetime
f = sys.stderr
def direct():
    f.write(enc.encode({"event":"request","level":"info","timestamp":datetime.datetime.now(datetime.UTC).isoformat(),"request_id":"0123456789abcdef","method":"GET","path":"/api/2.0/smtpsettings/smtp","status":200,"duration_ms":1.23,"client":"127.0.0.1","portal":"p000001.bench","user_id":5}).decode()+"\n"); f.flush()
t("direct msgspec line + write + flush", direct, 20000)
