"""Upgrades of the pg_tviews catalog and of PostgreSQL itself, with checks, backups and journal."""
