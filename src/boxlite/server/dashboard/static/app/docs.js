// Swagger UI over this server's /openapi.json. "Try it out" requests go out with the dashboard
// session's CSRF token (the session cookie then stands for the API key); no validator, no
// external requests.
(async () => {
  let csrf = '';
  try {
    const r = await fetch('/dashboard/session', { credentials: 'same-origin', cache: 'no-store' });
    csrf = (await r.json()).csrf || '';
  } catch (e) {
    csrf = '';
  }
  window.SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    validatorUrl: null,
    deepLinking: false,
    requestInterceptor: (req) => {
      if (csrf) req.headers['X-Boxlite-CSRF'] = csrf;
      return req;
    },
  });
})();
