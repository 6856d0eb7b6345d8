-- Schema of the ADR-003 Node reference (servers/node_adr_server.js), applied
-- by bench/run.py to a fresh benchmark database before the server starts.
CREATE TABLE documents (
    id         text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE permissions (
    document_id text NOT NULL REFERENCES documents (id),
    user_id     text NOT NULL,
    role        text NOT NULL DEFAULT 'editor',
    PRIMARY KEY (document_id, user_id)
);
CREATE TABLE operations (
    id          bigserial PRIMARY KEY,
    document_id text NOT NULL,
    user_id     text NOT NULL,
    operation   jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operations_document ON operations (document_id, id);
