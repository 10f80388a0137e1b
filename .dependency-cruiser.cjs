/**
 * Layering of src/ (run by `npm test` as `npm run lint:layers`): a module imports only from its own
 * layer or below, and there are no import circles (dynamic imports count).
 *
 * Layers, bottom to top:
 *   util (leaf helpers, e.g. option parsing) and sys,
 *   ring, mem, virtio, vhost, port (the poll-mode port drivers), dp, ofproto,
 *   protocols and services on top of the switch core (each its own folder: openflow, ovsdb, unixctl,
 *     metrics, capture, web; they may use each other, never daemon/app/cli),
 *   daemon, app, cli; src/index.ts (the library's entry) may import anything.
 * A new folder in src/ must be added to LAYERS (an unknown folder fails the check).
 */
const LAYERS = [
  ['util', 'sys'],
  ['ring'],
  ['mem'],
  ['virtio'],
  ['vhost'],
  ['port'],
  ['dp'],
  ['ofproto'],
  ['openflow', 'ovsdb', 'unixctl', 'metrics', 'capture', 'web'],
  ['daemon'],
  ['app'],
  ['cli'],
];

const known = LAYERS.flat();
const forbidden = [
  {
    name: 'no-circular',
    severity: 'error',
    comment: 'import circles make the layers meaningless; break them with a leaf module',
    from: { path: '^src/' },
    to: { circular: true },
  },
  {
    name: 'unknown-layer',
    severity: 'error',
    comment: 'every folder of src/ has a place in LAYERS (.dependency-cruiser.cjs)',
    from: { path: '^src/', pathNot: [`^src/(${known.join('|')})/`, '^src/index\\.ts$'] },
    to: {},
  },
];
// each layer may not import any folder of a higher layer
LAYERS.forEach((layer, i) => {
  const above = LAYERS.slice(i + 1).flat();
  if (above.length === 0) return;
  forbidden.push({
    name: `layer-${layer.join('-')}`,
    severity: 'error',
    comment: `${layer.join(', ')} may import only from its own layer or below, not from ${above.join(', ')}`,
    from: { path: `^src/(${layer.join('|')})/` },
    to: { path: `^src/(${above.join('|')})/` },
  });
});

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};
