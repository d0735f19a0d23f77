"""A Jobcenter system answering referrals on the partner kit (see README.md)."""
