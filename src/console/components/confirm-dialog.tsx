import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

export interface ConfirmDialogProps {
  title: string;
  /** The button that does it ("Stop", "Delete"). */
  confirmLabel: string;
  /** Destructive actions get the danger colour. */
  danger?: boolean;
  children?: ComponentChildren;
  onConfirm: () => void;
  onClose: () => void;
}

/**
 * A modal <dialog>: the browser traps focus in it and Esc closes it. The form's submit (the
 * confirm button, or Enter in a field) confirms.
 */
export function ConfirmDialog({ title, confirmLabel, danger, children, onConfirm, onClose }: ConfirmDialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current!;
    dialog.showModal();
    return () => dialog.close();
  }, []);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          onConfirm();
        }}
      >
        <h2 id="dialog-title">{title}</h2>
        {children}
        <div class="actions">
          <button type="button" onClick={() => ref.current!.close()}>
            Cancel
          </button>
          <button type="submit" class={danger ? "danger" : "primary"}>
            {confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}
