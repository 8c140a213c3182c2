// Stylesheets imported for their side effect: esbuild emits them next to the bundle.
declare module '*.css';
