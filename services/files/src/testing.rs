//! Images for tests, here and in the node's API tests (feature `testing`).

use image::codecs::jpeg::JpegEncoder;

/// The camera serial number in [`photo`]'s EXIF block.
pub const SERIAL: &[u8] = b"SN-4711";

/// A JPEG photo as a phone stores it: `width` × `height` pixels as
/// recorded, with an EXIF block saying to turn it 90° clockwise to show it
/// (orientation 6) and naming the camera's serial number.
pub fn photo(width: u32, height: u32) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut jpeg = Vec::new();
    if let Err(err) = JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&pixels) {
        panic!("a test photo: {err}");
    }
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&2u16.to_be_bytes());
    // Orientation (0x0112), SHORT, 1 value: 6.
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    // BodySerialNumber (0xA431), ASCII, 8 values at offset 38.
    tiff.extend_from_slice(&[0xa4, 0x31, 0, 2, 0, 0, 0, 8, 0, 0, 0, 38]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    tiff.extend_from_slice(SERIAL);
    tiff.push(0);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    // The EXIF segment goes right after the start-of-image marker.
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}
