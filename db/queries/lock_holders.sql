-- The sessions holding what install or uninstall waited for, the longest-open transaction
-- first: a lock on one of the tables (given by name) or their partitions, in a mode that
-- conflicts with the one the DDL takes; or the advisory lock of another install or
-- uninstall (a bigint key: pg_locks shows its upper half as classid, its lower as objid).
WITH named AS (
    SELECT pg_catalog.to_regclass(s.name) AS relid
    FROM unnest(%(tables)s::text[]) AS s (name)
), tables AS (
    SELECT n.relid FROM named AS n
    UNION  -- pg_partition_tree lists nothing for a table that is not partitioned
    SELECT t.relid FROM named AS n, LATERAL pg_catalog.pg_partition_tree(n.relid) AS t
)
SELECT CASE WHEN l.locktype = 'advisory' THEN 'another ledgeradmin install or uninstall'
            ELSE (SELECT pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(c.relname)
                  FROM pg_catalog.pg_class AS c
                  JOIN pg_catalog.pg_namespace AS ns ON ns.oid = c.relnamespace
                  WHERE c.oid = l.relation) END AS what,
       a.pid, a.usename, a.application_name, a.state,
       pg_catalog.floor(extract(epoch FROM pg_catalog.now() - a.xact_start))::bigint AS xact_seconds
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE l.granted
  AND l.pid <> pg_catalog.pg_backend_pid()
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                    WHERE d.datname = pg_catalog.current_database())
  AND ((l.locktype = 'relation' AND l.relation IN (SELECT relid FROM tables)
        AND l.mode = ANY (%(modes)s))
       OR (l.locktype = 'advisory' AND l.objsubid = 1
           AND (l.classid::bigint << 32 | l.objid::bigint) = %(key)s))
ORDER BY a.xact_start NULLS LAST, a.pid
LIMIT 10
