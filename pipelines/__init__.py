"""qlik-user-watch: alerts Qlik Cloud tenant admins when users join or accept invites."""
