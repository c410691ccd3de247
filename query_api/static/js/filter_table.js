// Generated from FILTERS in query_api/read/filters.py by `python -m auditlogkit.query_api.core.page_filters`; do not edit.

/** The API's filters that the page offers, in table order: [query parameter, chip label, widget]. */
export const FILTERS = [
  ["start", "Period", "period"],
  ["end", "Period", "period"],
  ["scope", "Scope", "scope"],
  ["category", "Category", "category"],
  ["action", "Action", "action"],
  ["status", "Status", "status"],
  ["actor_email", "User", "text"],
  ["actor_id", "User ID", "text"],
  ["ip", "IP address", "text"],
  ["workspace_id", "Workspace", "text"],
  ["target", "Target", "text"],
  ["q", "Search", "search"],
];
