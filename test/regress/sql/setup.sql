-- Shared fixtures: the extension, a small telecom schema, and helpers that show the trail.
CREATE EXTENSION pii_audit;

-- Waits until the worker has persisted everything queued so far.
CREATE FUNCTION wait_for_trail() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s record;
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
BEGIN
    LOOP
        SELECT * INTO s FROM pii_audit.status;
        EXIT WHEN s.queue_depth_bytes = 0 AND s.events_persisted + s.events_dropped >= s.events_enqueued;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the audit trail was not flushed within 30 s: %', s;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;

CREATE TABLE seen (last_event_id bigint NOT NULL);
INSERT INTO seen VALUES (0);

-- Waits for the trail, moves the mark to its last event and returns where the mark was.
CREATE FUNCTION advance_seen() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    since bigint;
BEGIN
    PERFORM wait_for_trail();
    SELECT last_event_id INTO since FROM seen;
    UPDATE seen SET last_event_id = coalesce((SELECT max(event_id) FROM pii_audit.events), 0);
    RETURN since;
END
$$;

-- The events recorded since the previous call, without the fields that change between runs.
CREATE FUNCTION new_events()
RETURNS TABLE (kind text, command text, relation text, columns text[], categories text[],
               row_count bigint, status text, end_user text, query_text text)
LANGUAGE plpgsql AS $$
DECLARE
    since bigint := advance_seen();
BEGIN
    RETURN QUERY
        SELECT e.kind, e.command, e.relation, e.columns, e.categories, e.row_count, e.status,
               e.end_user, e.query_text
        -- Time order: ids follow the order of batches, and within a batch the groups.
        FROM pii_audit.access_log e WHERE e.event_id > since ORDER BY e.event_time, e.event_id;
END
$$;

CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text,
    phone text,
    id_number text,
    address text,
    segment text
);
INSERT INTO customers
SELECT g, 'name-' || g, '1380000' || lpad(g::text, 4, '0'), 'ID' || g, 'street ' || g,
       CASE WHEN g % 2 = 0 THEN 'retail' ELSE 'business' END
FROM generate_series(1, 50) g;

CREATE TABLE sms_codes (
    id serial PRIMARY KEY,
    phone text NOT NULL,
    code text NOT NULL
);
INSERT INTO sms_codes (phone, code)
SELECT '1380000' || lpad(g::text, 4, '0'), lpad((g * 7919 % 1000000)::text, 6, '0')
FROM generate_series(1, 20) g;

CREATE TABLE tickets (id integer PRIMARY KEY, customer_id integer, topic text);
INSERT INTO tickets SELECT g, g, 'topic ' || g FROM generate_series(1, 10) g;
SELECT count(*) FROM new_events();
