-- Sales and service facts from other systems, and the customer's lifetime value.

CREATE TABLE orders (
    system       text NOT NULL,
    order_id     text NOT NULL,
    customer_id  uuid NOT NULL REFERENCES customers (id),
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status       text NOT NULL
                 CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    ordered_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, order_id)
);
CREATE INDEX orders_customer_idx ON orders (customer_id, ordered_at DESC);

-- Kept current by every order write: orders neither cancelled nor returned, per currency.
CREATE TABLE customer_values (
    customer_id    uuid NOT NULL REFERENCES customers (id),
    currency       text NOT NULL,
    lifetime_minor bigint NOT NULL,
    orders         integer NOT NULL,
    last_order_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, currency)
);

CREATE TABLE service_events (
    system      text NOT NULL,
    event_id    text NOT NULL,
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind        text NOT NULL
                CHECK (kind IN ('installation', 'delivery', 'outage', 'maintenance', 'other')),
    status      text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, event_id)
);
CREATE INDEX service_events_customer_idx ON service_events (customer_id, occurred_at DESC);

-- The screen pop's "contacted us lately" looks at finished calls per customer.
CREATE INDEX calls_customer_ended_idx ON calls (customer_id, ended_at DESC) WHERE customer_id IS NOT NULL;
