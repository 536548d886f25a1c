"""The operator API's credential: tokens a platform's back office uses to provision
tenants over HTTP (SPEC §11)."""
