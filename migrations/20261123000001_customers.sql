-- The integrated customer record: customers, their contact points and their identifiers in other systems.

CREATE TABLE customers (
    id                 uuid PRIMARY KEY,
    display_name       text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    company            text NOT NULL DEFAULT '',
    preferred_language text NOT NULL DEFAULT '',
    time_zone          text NOT NULL DEFAULT '',
    tier               text NOT NULL DEFAULT 'standard'
                       CHECK (tier IN ('standard', 'silver', 'gold', 'platinum')),
    vip                boolean NOT NULL DEFAULT false,
    segment            text NOT NULL DEFAULT '',
    marketing_consent  boolean NOT NULL DEFAULT false,
    do_not_call        boolean NOT NULL DEFAULT false,
    -- Client idempotency key of CreateCustomer.
    create_request_id  text UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    version            bigint NOT NULL DEFAULT 1
);

-- Name-prefix search (case-insensitive, byte order), keyset-paginated by (lower(name), id).
CREATE INDEX customers_name_prefix_idx
    ON customers ((lower(display_name) COLLATE "C"), id)
    WHERE deleted_at IS NULL;

CREATE TABLE contact_points (
    id          uuid PRIMARY KEY,
    -- Insertion order: the oldest remaining contact point becomes primary when the primary goes.
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind        text NOT NULL CHECK (kind IN ('phone', 'email')),
    -- E.164 for phones, lower-cased address for emails.
    value       text NOT NULL,
    extension   text NOT NULL DEFAULT '',
    label       text NOT NULL DEFAULT '',
    is_primary  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contact_points_unique_per_customer UNIQUE (customer_id, kind, value, extension)
);

-- The screen-pop and search lookup: who has this number / address?
CREATE INDEX contact_points_value_idx ON contact_points (kind, value);
-- At most one primary per customer and kind.
CREATE UNIQUE INDEX contact_points_one_primary_idx
    ON contact_points (customer_id, kind) WHERE is_primary;

CREATE TABLE external_references (
    system      text NOT NULL,
    external_id text NOT NULL,
    customer_id uuid NOT NULL REFERENCES customers (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT external_references_pkey PRIMARY KEY (system, external_id)
);
CREATE INDEX external_references_customer_idx ON external_references (customer_id);

-- Screen-pop cache invalidations that are committed with the write that needs them and removed
-- once Redis has applied them. Rows that stay here mean Redis could not be reached: every instance
-- bypasses the card cache until they are drained (see src/screenpop/invalidation.rs).
CREATE TABLE pop_invalidations (
    id         bigserial PRIMARY KEY,
    number     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
