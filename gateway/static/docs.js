// Swagger UI over the gateway's own OpenAPI document (generated from the code). "Authorize"
// takes client credentials (Basic) for /api/auth/token and the token it answers (Bearer) for the
// rest; "Try it out" sends real requests to this gateway.
window.ui = SwaggerUIBundle({
  url: "/api/upload/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayOperationId: true,
  // No persistAuthorization: it would keep the client secret in localStorage, in clear text.
  defaultModelsExpandDepth: 1,
  // No call to validator.swagger.io: the page must work without the internet.
  validatorUrl: null,
});
