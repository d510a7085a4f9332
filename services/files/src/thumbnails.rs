//! Thumbnails of images, made once a file may be served: decoded with
//! limits, turned upright by their EXIF orientation, scaled and encoded
//! afresh. Nothing of the original's metadata (EXIF with its GPS position,
//! camera serials, comments) survives the re-encoding.

use std::io::Cursor;

use colink_proto::files::v1 as pb;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageFormat, ImageReader, Limits};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use tokio::io::AsyncReadExt;

use crate::Shared;
use crate::objects::StoreError;
use crate::store::{file, thumbnail};

/// Images larger than this are not thumbnailed.
const MAX_SOURCE_BYTES: i64 = 50 * 1024 * 1024;
/// Pixels of the decoded image, at most: a small file can claim a huge
/// canvas.
const MAX_EDGE: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
const JPEG_QUALITY: u8 = 82;

/// The sizes made, by the longest edge they fit in.
pub(crate) const SIZES: [(pb::ThumbnailSize, u32); 3] =
    [(pb::ThumbnailSize::Small, 64), (pb::ThumbnailSize::Medium, 360), (pb::ThumbnailSize::Large, 1024)];

/// Where a thumbnail's bytes live.
pub(crate) fn key(file_id: &str, size: pb::ThumbnailSize) -> String {
    let name = match size {
        pb::ThumbnailSize::Small => "small",
        pb::ThumbnailSize::Medium => "medium",
        _ => "large",
    };
    format!("thumbnails/{file_id}/{name}")
}

/// What thumbnailing an image gave: its upright size and the thumbnails,
/// stored already.
pub(crate) struct Made {
    pub width: i32,
    pub height: i32,
    pub thumbnails: Vec<thumbnail::Model>,
}

/// One thumbnail's bytes before they are stored.
#[derive(Debug)]
struct Rendered {
    size: pb::ThumbnailSize,
    width: u32,
    height: u32,
    mime_type: &'static str,
    bytes: Vec<u8>,
}

/// Makes and stores the thumbnails of an image file; None for a file that
/// is not an image or that cannot be decoded, which is served without. A
/// store that fails is an error, to be retried.
pub(crate) async fn make(shared: &Shared, f: &file::Model) -> Result<Option<Made>, StoreError> {
    let Some(format) = format_of(&f.mime_type) else { return Ok(None) };
    if f.size_bytes > MAX_SOURCE_BYTES {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(f.size_bytes as usize);
    shared.objects.read(&f.object_key).await?.read_to_end(&mut bytes).await?;
    let rendered = tokio::task::spawn_blocking(move || render(&bytes, format)).await;
    let (width, height, rendered) = match rendered {
        Ok(Ok(done)) => done,
        Ok(Err(err)) => {
            tracing::info!(file_id = %f.file_id, error = %err, "an image could not be thumbnailed");
            return Ok(None);
        }
        Err(err) => {
            tracing::warn!(file_id = %f.file_id, error = %err, "thumbnailing stopped");
            return Ok(None);
        }
    };
    let mut thumbnails = Vec::with_capacity(rendered.len());
    for thumb in rendered {
        let object_key = key(&f.file_id, thumb.size);
        let size_bytes = thumb.bytes.len() as i64;
        shared.objects.put(&object_key, thumb.bytes, thumb.mime_type).await?;
        thumbnails.push(thumbnail::Model {
            file_id: f.file_id.clone(),
            size: thumb.size as i32,
            width: thumb.width as i32,
            height: thumb.height as i32,
            mime_type: thumb.mime_type.to_string(),
            size_bytes,
            object_key,
        });
    }
    Ok(Some(Made { width: width as i32, height: height as i32, thumbnails }))
}

/// Records the thumbnails in the transaction that makes the file servable.
pub(crate) async fn record<C: ConnectionTrait>(conn: &C, made: &Made) -> Result<(), DbErr> {
    if made.thumbnails.is_empty() {
        return Ok(());
    }
    let rows = made.thumbnails.iter().cloned().map(thumbnail::ActiveModel::from);
    let repeat = OnConflict::columns([thumbnail::Column::FileId, thumbnail::Column::Size]).do_nothing().to_owned();
    thumbnail::Entity::insert_many(rows).on_conflict(repeat).try_insert().exec(conn).await?;
    Ok(())
}

/// The thumbnails of some files, in size order.
pub(crate) async fn of<C: ConnectionTrait>(conn: &C, file_ids: &[&str]) -> Result<Vec<thumbnail::Model>, DbErr> {
    if file_ids.is_empty() {
        return Ok(Vec::new());
    }
    thumbnail::Entity::find()
        .filter(thumbnail::Column::FileId.is_in(file_ids.iter().copied()))
        .order_by_asc(thumbnail::Column::Size)
        .all(conn)
        .await
}

/// Removes a file's thumbnails from the store; the rows stay, as the file's
/// own row does.
pub(crate) async fn remove(shared: &Shared, file_id: &str) {
    for (size, _) in SIZES {
        if let Err(err) = shared.objects.delete(&key(file_id, size)).await {
            tracing::warn!(%file_id, error = %err, "could not delete a thumbnail");
        }
    }
}

/// Whether a file's thumbnails could exist: an image that may be served.
pub(crate) fn may_have(f: &file::Model) -> bool {
    f.file_type == pb::FileType::Image as i32
        && matches!(pb::ScanStatus::try_from(f.scan_status), Ok(pb::ScanStatus::Clean | pb::ScanStatus::Unscanned))
}

fn format_of(mime_type: &str) -> Option<ImageFormat> {
    match mime_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Decodes an image (the first frame of an animation) and renders every
/// size; each is at most the upright original's size, never enlarged.
fn render(bytes: &[u8], format: ImageFormat) -> image::ImageResult<(u32, u32, Vec<Rendered>)> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_EDGE);
    limits.max_image_height = Some(MAX_EDGE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());
    let mut rendered = Vec::with_capacity(SIZES.len());
    for (size, edge) in SIZES {
        let scaled = if width.max(height) > edge { image.thumbnail(edge, edge) } else { image.clone() };
        rendered.push(encode(size, &scaled)?);
    }
    Ok((width, height, rendered))
}

/// JPEG for opaque images; lossless WebP keeps transparency.
fn encode(size: pb::ThumbnailSize, image: &DynamicImage) -> image::ImageResult<Rendered> {
    let mut bytes = Vec::new();
    let mime_type = if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        WebPEncoder::new_lossless(&mut bytes).encode(
            rgba.as_raw(),
            rgba.width(),
            rgba.height(),
            ExtendedColorType::Rgba8,
        )?;
        "image/webp"
    } else {
        let rgb = image.to_rgb8();
        JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY).encode_image(&rgb)?;
        "image/jpeg"
    };
    Ok(Rendered { size, width: image.width(), height: image.height(), mime_type, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SERIAL, photo};

    #[test]
    fn photos_are_turned_upright_scaled_and_stripped() {
        let source = photo(1200, 800);
        assert!(source.windows(SERIAL.len()).any(|w| w == SERIAL));
        let (width, height, rendered) = render(&source, ImageFormat::Jpeg).unwrap();
        assert_eq!((width, height), (800, 1200), "orientation 6 stands the picture up");
        let sizes: Vec<_> = rendered.iter().map(|r| (r.size, r.width, r.height, r.mime_type)).collect();
        assert_eq!(
            sizes,
            [
                (pb::ThumbnailSize::Small, 43, 64, "image/jpeg"),
                (pb::ThumbnailSize::Medium, 240, 360, "image/jpeg"),
                (pb::ThumbnailSize::Large, 683, 1024, "image/jpeg"),
            ]
        );
        for thumb in &rendered {
            assert!(!thumb.bytes.windows(4).any(|w| w == b"Exif"), "no EXIF block");
            assert!(!thumb.bytes.windows(SERIAL.len()).any(|w| w == SERIAL), "no serial number");
            let decoded = image::load_from_memory_with_format(&thumb.bytes, ImageFormat::Jpeg).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (thumb.width, thumb.height));
        }
    }

    #[test]
    fn small_and_transparent_images_keep_their_size_and_alpha() {
        let image = image::RgbaImage::from_fn(40, 20, |x, _| image::Rgba([255, 0, 0, (x * 6) as u8]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(image).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let (width, height, rendered) = render(&png, ImageFormat::Png).unwrap();
        assert_eq!((width, height), (40, 20));
        for thumb in &rendered {
            assert_eq!((thumb.width, thumb.height, thumb.mime_type), (40, 20, "image/webp"));
            let decoded = image::load_from_memory_with_format(&thumb.bytes, ImageFormat::WebP).unwrap();
            assert!(decoded.color().has_alpha());
        }
    }

    #[test]
    fn every_image_format_an_upload_may_have_is_thumbnailed() {
        let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(500, 100, |x, _| {
            image::Rgb([(x % 256) as u8, 40, 200])
        }));
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::WebP] {
            let mut bytes = Vec::new();
            image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            let (width, height, rendered) = render(&bytes, format).unwrap();
            assert_eq!((width, height), (500, 100), "{format:?}");
            let sizes: Vec<_> = rendered.iter().map(|r| (r.width, r.height)).collect();
            assert_eq!(sizes, [(64, 13), (360, 72), (500, 100)], "{format:?}");
        }
    }

    #[test]
    fn broken_and_oversized_images_are_refused() {
        let source = photo(64, 64);
        assert!(render(&source[..source.len() / 2], ImageFormat::Jpeg).is_err());
        assert!(render(b"\x89PNG\r\n\x1a\nnot really", ImageFormat::Png).is_err());
        // A PNG header that claims 100,000 × 100,000 pixels.
        let mut huge = Vec::new();
        image::DynamicImage::new_rgb8(1, 1).write_to(&mut Cursor::new(&mut huge), ImageFormat::Png).unwrap();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = render(&huge, ImageFormat::Png).unwrap_err();
        assert!(matches!(err, image::ImageError::Limits(_)), "{err}");
    }

    /// The checksum of a PNG chunk, so that only the claimed size is wrong.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
