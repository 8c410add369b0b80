// The input image and the inpainting mask painted over it.
//
// Both canvases have the image's own pixel size (CSS scales them to the page), so the mask is
// exactly as large as the image, which the API requires. The mask canvas holds the painted
// strokes in one colour; it is shown half transparent over the image and exported in the
// polarity each API expects (white = repaint for most; transparent = repaint for OpenAI).

const STROKE = "rgb(255, 40, 100)";

export class ImageEditor {
  constructor(imageCanvas, maskCanvas) {
    this.image = imageCanvas;
    this.mask = maskCanvas;
    this.brush = 32;
    this.erase = false;
    this.painting = false;
    this.last = null;
    this.onchange = () => {};
    maskCanvas.addEventListener("pointerdown", (e) => this._down(e));
    maskCanvas.addEventListener("pointermove", (e) => this._move(e));
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
      maskCanvas.addEventListener(type, () => this._up());
    }
  }

  get loaded() { return this.image.width > 0 && this.image.height > 0 && this._loaded === true; }
  get width() { return this.image.width; }
  get height() { return this.image.height; }

  // Draws ``source`` (an <img> or ImageBitmap) scaled to fit maxSide, each side a multiple of 8
  // (the engine's rule), on white (so transparency in the file never becomes a mask).
  setImage(source, maxSide) {
    const w0 = source.naturalWidth || source.width;
    const h0 = source.naturalHeight || source.height;
    const scale = Math.min(1, maxSide / Math.max(w0, h0));
    const w = Math.max(64, Math.floor((w0 * scale) / 8) * 8);
    const h = Math.max(64, Math.floor((h0 * scale) / 8) * 8);
    for (const c of [this.image, this.mask]) { c.width = w; c.height = h; }
    const ctx = this.image.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(source, 0, 0, w, h);
    this._loaded = true;
    this.clearMask();
    return { width: w, height: h, originalWidth: w0, originalHeight: h0 };
  }

  imageDataURL() { return this.image.toDataURL("image/png"); }

  // True when any pixel is painted (as the export counts them).
  hasMask() {
    const { data } = this.mask.getContext("2d").getImageData(0, 0, this.mask.width, this.mask.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) return true;
    return false;
  }

  // The mask as the native API, Workers AI, A1111 and ModelsLab read it: white = repaint,
  // black = keep. Binary (soft brush edges cut at half), so every dialect reads the same mask.
  maskDataURL() {
    return this._export((painted) => (painted ? [255, 255, 255, 255] : [0, 0, 0, 255]));
  }

  // The mask as OpenAI's edits endpoint reads it: transparent = repaint, opaque = keep.
  maskAlphaDataURL() {
    return this._export((painted) => (painted ? [0, 0, 0, 0] : [0, 0, 0, 255]));
  }

  _export(pixel) {
    const { width, height } = this.mask;
    const src = this.mask.getContext("2d").getImageData(0, 0, width, height).data;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const ctx = out.getContext("2d");
    const img = ctx.createImageData(width, height);
    for (let i = 0; i < src.length; i += 4) img.data.set(pixel(src[i + 3] >= 128), i);
    ctx.putImageData(img, 0, 0);
    return out.toDataURL("image/png");
  }

  clearMask() {
    this.mask.getContext("2d").clearRect(0, 0, this.mask.width, this.mask.height);
    this.onchange();
  }

  fillMask() {
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = STROKE;
    ctx.fillRect(0, 0, this.mask.width, this.mask.height);
    this.onchange();
  }

  invertMask() {
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = "xor";
    ctx.fillStyle = STROKE;
    ctx.fillRect(0, 0, this.mask.width, this.mask.height);
    ctx.globalCompositeOperation = "source-over";
    this.onchange();
  }

  _point(e) {
    const r = this.mask.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * this.mask.width) / r.width, y: ((e.clientY - r.top) * this.mask.height) / r.height };
  }

  _scale() {
    // The brush size is in screen pixels, so it feels the same at any image size.
    const r = this.mask.getBoundingClientRect();
    return r.width ? this.mask.width / r.width : 1;
  }

  _down(e) {
    if (e.button !== undefined && e.button !== 0) return;
    e.preventDefault();
    this.mask.setPointerCapture?.(e.pointerId);
    this.painting = true;
    this.last = this._point(e);
    this._stroke(this.last, this.last);
  }

  _move(e) {
    if (!this.painting) return;
    e.preventDefault();
    const p = this._point(e);
    this._stroke(this.last, p);
    this.last = p;
  }

  _up() {
    if (!this.painting) return;
    this.painting = false;
    this.last = null;
    this.onchange();
  }

  _stroke(a, b) {
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = this.erase ? "destination-out" : "source-over";
    ctx.strokeStyle = STROKE;
    ctx.lineWidth = this.brush * this._scale();
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x + 0.01, b.y);  // a zero-length line draws nothing; a click should paint a dot
    ctx.stroke();
    ctx.globalCompositeOperation = "source-over";
  }
}
