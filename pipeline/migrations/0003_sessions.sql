-- Dashboard sessions ended by logout before their token expired (the token's jti): a copy
-- of the cookie stops working at logout, in every instance. A row is dropped once its token
-- would have expired anyway.
CREATE TABLE auth.ended_sessions (
    jti         text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
