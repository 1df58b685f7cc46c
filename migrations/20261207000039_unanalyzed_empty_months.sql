-- No month of a partitioned history table stays "analyzed and empty" (docs/SCALING.md step 2,
-- "Empty months are never analyzed"). Migrations 35 and 36 analyzed every month they made,
-- including the empty ones ahead (and, on a new database, the current one). PostgreSQL plans an
-- analyzed, empty month as empty: a generic plan cached then scans the whole month, for every
-- call, as it fills, until autovacuum analyzes it again. A month never analyzed is planned as at
-- least ten pages, and gets index scans. On a new database the feed's numbering and the call
-- events' lookups read their month with sequential scans (2.9 million feed rows read by 493 scans
-- in one ten-second events benchmark).
--
-- Each month that is empty now and was analyzed so is made again: dropped (it has no rows) and
-- made by `history_make_month`, which gives it the table's indexes and storage parameters.
DO $$
DECLARE
    m   record;
    has_rows boolean;
BEGIN
    FOR m IN
        SELECT p.relname::text AS parent, c.relname::text AS part,
               to_date(right(c.relname, 7), 'YYYY_MM') AS month
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname IN ('audit_events', 'feed_events', 'call_events', 'calls')
           AND c.relname ~ ('^' || p.relname || '_p[0-9]{4}_[0-9]{2}$')
           AND c.reltuples = 0
         ORDER BY 1, 2
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', m.part) INTO has_rows;
        IF NOT has_rows THEN
            EXECUTE format('DROP TABLE %I', m.part);
            PERFORM history_make_month(m.parent, m.month);
        END IF;
    END LOOP;
END $$;
