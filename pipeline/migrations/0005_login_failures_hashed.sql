-- Failed logins of a name that matches no account are counted under its HMAC ('#' and hex,
-- common/auth.py failure_key) since this release. Counters kept before under such a name in
-- clear (perhaps a password typed in the wrong field) are dropped: nothing reads them now.
DELETE FROM auth.login_failures AS f
WHERE f.username NOT LIKE '#%'
  AND NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.username = f.username);
