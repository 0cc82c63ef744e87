"""Host-side pieces shared by both engines' box networking."""
