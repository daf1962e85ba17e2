// Tile geometry shared by the binning passes (included after common.glsl and the Footprints
// binding). Tiles are TILE x TILE pixels, row-major per image, images one after the other.

// Whether footprint `g` touches tile `tile` (global tile index) of a tiles_x-wide grid.
bool touches_tile(uint g, uint tile, uint tiles_x, uint tiles_per_image, uint tile_side) {
    uint local_tile = tile % tiles_per_image;
    uint row0 = (local_tile / tiles_x) * tile_side;
    uint col0 = (local_tile % tiles_x) * tile_side;
    uint r0 = footprints[4u * g], r1 = footprints[4u * g + 1u];
    uint c0 = footprints[4u * g + 2u], c1 = footprints[4u * g + 3u];
    // Empty footprints are stored as zeros, so r0 < r1 fails for them.
    return r0 < r1 && r0 < row0 + tile_side && r1 > row0 && c0 < col0 + tile_side && c1 > col0;
}
