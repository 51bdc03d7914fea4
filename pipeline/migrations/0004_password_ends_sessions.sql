-- A new password ends the account's dashboard sessions started before it (a reset after a
-- compromise must lock the old cookies out, as disabling does). Existing accounts keep
-- their sessions: nothing was changed for them.
ALTER TABLE auth.users ADD COLUMN sessions_since timestamptz NOT NULL DEFAULT '-infinity';
