-- Failed logins of a name that matches no account are counted under an HMAC ('#' and hex,
-- common/auth.py failure_key) since this release. Every counter kept under a name that
-- matches no account is dropped: in clear before (perhaps a password typed in the wrong
-- field), or keyed otherwise; such counters start afresh. Accounts' counters (a lock in
-- force) stay.
DELETE FROM auth.login_failures AS f
WHERE NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.username = f.username);
