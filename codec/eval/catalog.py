"""Names the command line offers: metric groups and system specs. No imports, so `voxtok --help` stays fast."""

# Metric groups as named on the command line -> the columns they produce, in report order.
GROUPS: dict[str, tuple[str, ...]] = {
    "pesq": ("pesq",),
    "stoi": ("stoi",),
    "estoi": ("estoi",),
    "sisdr": ("si_sdr",),
    "mel": ("mel_l1",),
    "mrstft": ("mrstft",),
    "pitch": ("f0_rmse_cents", "gpe", "vde"),
    "sim": ("spk_sim",),
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"),
    "wer": ("wer", "cer", "dwer"),
    "per": ("per", "dper"),
}

SPEC_HELP = """\
identity                 lossless FLAC round trip (sanity row)
opus:KBPS                opusenc/opusdec, e.g. opus:6
codec2:MODE              c2enc/c2dec, MODE in 3200 2400 1600 1400 1300 1200 700C 450
speex[:QUALITY]          speexenc wideband, quality 0-10 (default 8)
voxtok[:MODEL][@KBPS]    this codec, e.g. voxtok@1.5 or voxtok:runs/my_model@1.5kbps; the 12.5 Hz tokenizer
                         takes +flow / +regression, +steps=N, +temperature=T and +latents (continuous), e.g.
                         voxtok:voxtok-16k-12hz+latents+steps=4
cmd:ENC::DEC             two command templates with {in} and {out}
folder:PATH              already-decoded files, matched by relative path
NAME=SPEC                any of the above under another name in the report"""

BASELINES = ("opus:6", "opus:8", "opus:12", "codec2:1200", "codec2:3200", "speex", "identity")
