#!/usr/bin/env bash
# Rebuild src/facerecon/serve/static/vendor/three-viewer.min.js: three.js (MIT) with GLTFLoader and
# OrbitControls, bundled and minified into one ES module with esbuild, so the page needs no CDN.
# Run by hand when updating three (needs node + npm); the page only ever loads the built file.
set -euo pipefail
THREE=${THREE:-0.187.0}
ESBUILD=${ESBUILD:-0.28.2}
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/src/facerecon/serve/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund "three@$THREE" "esbuild@$ESBUILD" >/dev/null
cat > entry.js <<'JS'
export { Scene, WebGLRenderer, PerspectiveCamera, HemisphereLight, DirectionalLight, AmbientLight, Box3, Vector3,
  Color, SRGBColorSpace, ACESFilmicToneMapping, NoToneMapping, MeshStandardMaterial, DoubleSide } from 'three';
export { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
export { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
JS
npx esbuild entry.js --bundle --minify --format=esm --legal-comments=inline --outfile="$dest/three-viewer.min.js"
cp node_modules/three/LICENSE "$dest/LICENSE-three.txt"
echo "three $THREE, esbuild $ESBUILD -> $dest/three-viewer.min.js ($(wc -c < "$dest/three-viewer.min.js") bytes)"
