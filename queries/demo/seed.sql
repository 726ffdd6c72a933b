-- Synthetic data for the reportupdater demo (queries/demo).
--
-- The sql engine runs this script to build demo.db when that file is
-- missing (the `seed:` key of the `demo` database in config.yaml). Everything
-- is deterministic: the "random" numbers come from a linear congruential
-- generator written as arithmetic, so every build gives the same rows.
--
-- Covers 2026-08-01 .. 2026-10-31 (92 days) for enwiki, dewiki, frwiki and
-- eswiki. Gaps on purpose: frwiki has no edits on 2026-09-14 .. 2026-09-16
-- and eswiki none on 2026-10-04, so daily_edits shows the empty row that
-- marks a computed interval without data.

CREATE TABLE edits (
    wiki          TEXT    NOT NULL,  -- database name, e.g. enwiki
    rev_timestamp TEXT    NOT NULL,  -- MediaWiki style YYYYMMDDHHMMSS, UTC
    user_id       INTEGER NOT NULL,
    bytes         INTEGER NOT NULL   -- change of the page size; negative: text removed
);

CREATE TABLE pageviews (
    wiki          TEXT    NOT NULL,
    day           TEXT    NOT NULL,  -- YYYY-MM-DD, UTC
    access_method TEXT    NOT NULL,  -- desktop, mobile-web, mobile-app
    views         INTEGER NOT NULL
);

-- The pseudo-random step: an LCG step, (x * 1103515245 + 12345) % 2147483648,
-- then squared modulo the prime 2147483647 (an LCG alone is affine, and its
-- bits repeat with short periods over consecutive inputs). The high bits
-- (r / 65536) are the ones used. Products stay below 2^63.
WITH RECURSIVE
    days(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d < 91),
    seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k < 79),
    -- base: at least this many edits a day (at most twice as many);
    -- users: size of the wiki's editor pool
    wikis(w, wiki, base, users) AS (
        VALUES (1, 'enwiki', 40, 150), (2, 'dewiki', 20, 80),
               (3, 'frwiki', 15, 60), (4, 'eswiki', 10, 40)
    ),
    wiki_days AS (
        SELECT w, wiki, d, users, base,
               date('2026-08-01', '+' || d || ' days') AS day,
               ((d * 7919 + w * 104729 + 1) * 1103515245 + 12345) % 2147483648 AS l
        FROM wikis, days
        WHERE NOT (wiki = 'frwiki' AND d BETWEEN 44 AND 46)  -- 2026-09-14 .. 2026-09-16
          AND NOT (wiki = 'eswiki' AND d = 64)               -- 2026-10-04
    ),
    wiki_day_counts AS (
        SELECT w, wiki, d, users, day, base + (l * l % 2147483647) / 65536 % (base + 1) AS n
        FROM wiki_days
    ),
    r1 AS (
        SELECT wiki, day, users,
               (((w * 1000 + d) * 100 + k) * 1103515245 + 12345) % 2147483648 AS l1
        FROM wiki_day_counts JOIN seq ON seq.k < wiki_day_counts.n
    ),
    r2 AS (SELECT wiki, day, users, l1 * l1 % 2147483647 AS a FROM r1),
    r3 AS (SELECT wiki, day, users, a,
                  (a * 1103515245 + 12345) % 2147483648 AS l2 FROM r2),
    r4 AS (SELECT wiki, day, users, a, l2 * l2 % 2147483647 AS b FROM r3),
    r5 AS (SELECT wiki, day, users, a, b,
                  (b * 1103515245 + 12345) % 2147483648 AS l3 FROM r4),
    r6 AS (SELECT wiki, day, users, a, b, l3 * l3 % 2147483647 AS c FROM r5)
INSERT INTO edits (wiki, rev_timestamp, user_id, bytes)
SELECT wiki,
       replace(day, '-', '')
           || printf('%02d%02d%02d', a / 65536 % 24, b / 65536 % 60, c / 65536 % 60),
       -- product of two uniform numbers: a few editors make most edits
       1 + (b / 256 % users) * (c / 256 % users) / users,
       CASE WHEN c % 97 < 5 THEN c / 64 % 20000 + 2000   -- now and then a big addition
            ELSE a / 32 % 1200 - 300                     -- mostly small, some removals
       END
FROM r6;

WITH RECURSIVE
    days(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d < 91),
    wikis(w, wiki, scale) AS (
        VALUES (1, 'enwiki', 100), (2, 'dewiki', 40), (3, 'frwiki', 30), (4, 'eswiki', 25)
    ),
    methods(m, access_method, share) AS (
        VALUES (1, 'desktop', 50), (2, 'mobile-web', 42), (3, 'mobile-app', 8)
    ),
    cells AS (
        SELECT w, wiki, d, m, access_method, share, scale,
               date('2026-08-01', '+' || d || ' days') AS day,
               (((d * 31 + w) * 7 + m) * 1103515245 + 12345) % 2147483648 AS l
        FROM days, wikis, methods
    ),
    noisy AS (SELECT *, l * l % 2147483647 AS a FROM cells)
INSERT INTO pageviews (wiki, day, access_method, views)
SELECT wiki, day, access_method,
       -- +-10 % noise; on weekends fewer desktop and more mobile views
       scale * share * (90 + a / 65536 % 21)
           * (CASE WHEN strftime('%w', day) IN ('0', '6')
                   THEN (CASE access_method WHEN 'desktop' THEN 7 ELSE 12 END)
                   ELSE 10 END) / 10
FROM noisy;

CREATE INDEX edits_wiki_timestamp ON edits (wiki, rev_timestamp);
CREATE INDEX pageviews_day ON pageviews (day);
