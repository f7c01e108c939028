// Offline once loaded: every same-origin GET goes to the network first and is kept in the cache; without a
// network the cached copy answers. The page stores what it fetched before this worker controlled it (app.js).
// Every response it serves carries COOP / COEP, so the page is cross-origin isolated and WebAssembly runs on several
// threads: a static host (a Hugging Face static Space, python -m http.server) sends no such headers itself.
const CACHE = 'diffusion-web-v1';

function isolated(res) {
  if (res.type === 'opaque' || res.status === 0) return res;
  const headers = new Headers(res.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (e) => {
  if (e.request.method !== 'GET' || new URL(e.request.url).origin !== self.location.origin) return;
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(e.request);
      if (res.ok) cache.put(e.request, res.clone());
      return isolated(res);
    } catch (err) {
      const hit = await cache.match(e.request, { ignoreSearch: true });
      if (hit) return isolated(hit);
      throw err;
    }
  })());
});
