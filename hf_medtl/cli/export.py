"""`hf-medtl export MODEL_DIR --onnx OUT --check INPUT...`: ONNX, checked against PyTorch on real images."""
from __future__ import annotations

from hf_medtl.cli.common import MODEL_DIR_HELP, model_flags, option_flags, positive
from hf_medtl.config.commands import ExportOptions

OPTIONS = ExportOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a saved model as ONNX and check it against PyTorch")
    p.add_argument("model_dir", help=MODEL_DIR_HELP)
    option_flags(p, OPTIONS, "onnx", "check", "opset", onnx={"required": True, "metavar": "OUT"},
                 check={"required": True, "nargs": "+", "metavar": "INPUT"}, opset={"type": positive})
    model_flags(p, OPTIONS)
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.inference.export import ATOL, export_onnx

    r = export_onnx(args.model_dir, args.onnx, args.check, opset=args.opset,
                    allow_pickle_weights=args.allow_pickle_weights, trust_remote_code=args.trust_remote_code)
    print(f"wrote {r['path']}; onnxruntime matches PyTorch on {r['images_checked']} image(s): largest probability "
          f"difference {r['max_abs_diff']:.1e} (limit {ATOL:g})")
    return 0
