"""People signing in to the console: password resets, two-factor sign-in (TOTP and
recovery codes) and the account policy that requires it."""
