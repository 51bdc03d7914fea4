-- Users of the HTTP functions (bcrypt hashes) and the login-failure counter behind the 429.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
    username       text        PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text        NOT NULL,
    role           text        NOT NULL CHECK (role IN ('analyst', 'admin')),
    disabled       boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per username (known or not), so the limit holds across function instances.
CREATE TABLE auth.login_failures (
    username       text        PRIMARY KEY,
    failures       integer     NOT NULL DEFAULT 0,
    window_start   timestamptz NOT NULL DEFAULT now(),
    locked_until   timestamptz
);
