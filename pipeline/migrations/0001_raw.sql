-- The raw area: loads bookkeeping, accepted rows and rejected rows with their reasons.
-- load_id is written by the loader in the same transaction as raw.loads; it has no foreign
-- key on purpose: a per-row RI trigger more than doubled the time of a million-row load.
CREATE SCHEMA IF NOT EXISTS raw;

CREATE TABLE raw.loads (
    load_id        bigserial PRIMARY KEY,
    source_file    text        NOT NULL,
    file_sha256    text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    rows_read      integer     NOT NULL DEFAULT 0,
    rows_loaded    integer     NOT NULL DEFAULT 0,
    rows_rejected  integer     NOT NULL DEFAULT 0
);
CREATE INDEX loads_file_sha256_idx ON raw.loads (file_sha256);

CREATE TABLE raw.transactions (
    transaction_id         text        PRIMARY KEY,
    masked_transaction_id  text        NOT NULL,
    product                text        NOT NULL,
    price                  numeric     NOT NULL CHECK (price >= 0),
    quantity               integer     NOT NULL CHECK (quantity > 0),
    sale_date              date        NOT NULL,
    load_id                bigint      NOT NULL,
    source_line            integer     NOT NULL,
    loaded_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE raw.rejected_transactions (
    reject_id     bigserial   PRIMARY KEY,
    load_id       bigint      NOT NULL,
    source_file   text        NOT NULL,
    line_number   integer     NOT NULL,
    raw_text      text        NOT NULL,
    reason        text        NOT NULL,
    rejected_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_transactions_load_idx ON raw.rejected_transactions (load_id);
