// Starts Swagger UI (served from this app under /docs/assets/) on this app's /openapi.json. No other host is
// contacted: the online validator badge is off.
"use strict";

window.ui = window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [window.SwaggerUIBundle.presets.apis],
});
